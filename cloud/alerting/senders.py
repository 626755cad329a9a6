"""Delivery of one notification to one channel: HTTP POST (webhook, Slack, Alertmanager) with
httpx, e-mail with the standard library's smtplib (STARTTLS or TLS optional, credentials from a
SecretRef) in a worker thread. Each call is bounded by the channel's timeout and raises
``DeliveryError`` with a short reason on failure; the dispatcher records it and retries."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx

from cloud.alerting import payloads
from cloud.alerting.config import AlertmanagerConfig, EmailConfig, WebhookConfig, channel_config


class DeliveryError(Exception):
    """A delivery that did not succeed; the message is recorded as the attempt's error."""


async def deliver(
    client: httpx.AsyncClient, kind: str, config: dict[str, Any], n: dict[str, Any]
) -> None:
    try:
        parsed = channel_config(kind, config)
    except ValueError as exc:
        raise DeliveryError(f"channel configuration: {exc}") from None
    if kind == "email":
        assert isinstance(parsed, EmailConfig)
        subject, text = payloads.email(n)
        await asyncio.wait_for(
            asyncio.to_thread(_send_mail, parsed, subject, text, n), parsed.timeout_s + 5
        )
        return
    assert isinstance(parsed, WebhookConfig | AlertmanagerConfig)
    if kind == "alertmanager":
        url = parsed.url.rstrip("/") + "/api/v2/alerts"
        body: Any = payloads.alertmanager(n)
    elif kind == "slack":
        url, body = parsed.url, payloads.slack(n)
    else:
        url, body = parsed.url, payloads.webhook(n)
    headers = {
        "User-Agent": "rig-alpha-alerting",
        # Retries of one notification carry the same key: a receiver can drop repeats.
        "Idempotency-Key": f"rig-alpha-notification-{n['id']}",
    }
    if parsed.bearer is not None:
        try:
            headers["Authorization"] = f"Bearer {parsed.bearer.read()}"
        except ValueError as exc:
            raise DeliveryError(f"config.bearer: {exc}") from None
    try:
        response = await client.post(url, json=body, headers=headers, timeout=parsed.timeout_s)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__) from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")


def _send_mail(config: EmailConfig, subject: str, body: str, n: dict[str, Any]) -> None:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(f"rig-alpha-{n['id']}")
    message["X-Rig-Alert-Group"] = n["group_key"]
    message.set_content(body)
    password = None
    if config.password is not None:
        try:
            password = config.password.read()
        except ValueError as exc:
            raise DeliveryError(f"config.password: {exc}") from None
    try:
        # Certificates are always verified (against ca_file when given): credentials never
        # go to a server that merely claims to be the right one.
        context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file is not None else None
        )
        smtp: smtplib.SMTP
        if config.ssl:
            smtp = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        with smtp:
            if config.starttls:
                smtp.starttls(context=context)
            if config.username is not None:
                smtp.login(config.username, password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(
            f"SMTP {config.host}:{config.port}: {type(exc).__name__}: {exc}"[:500]
        ) from None
