"""The client of an OpenAI-compatible chat-completions endpoint (Groq, llama.cpp, vLLM,
Ollama, ...): one JSON answer per call, never streamed.

Every call is bounded twice: one HTTP attempt by ``timeout_s``, all attempts of the call
together by ``budget_s``. 429 and 5xx answers and transport failures are retried up to
``max_retries`` times with exponential back-off, or after the Retry-After the server asked
for; a wait that would overrun the budget is not made. Whatever goes wrong ends in
``ProviderError`` whose message says why in words an operator can act on: the callers answer
from the offline path then and show that message as their note.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from cloud.settings import CloudSettings
from shared.logs import log_event

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The first back-off; doubled per attempt, with jitter so that several API processes do not
# retry in step.
_BACKOFF_S = 0.5
_FENCE_RE = re.compile(r"^\s*```(?:json|JSON)?\s*(.*?)\s*```\s*$", re.DOTALL)


class ProviderError(Exception):
    """The provider gave no usable answer; the message is the note shown to the user."""


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    base_url: str
    api_key: str | None
    timeout_s: float
    max_retries: int
    budget_s: float
    max_tokens: int

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> ProviderConfig | None:
        """None when no provider is configured (the offline path answers)."""
        endpoint = settings.ai_endpoint
        if endpoint is None:
            return None
        return cls(
            base_url=endpoint,
            api_key=settings.ai_api_key,
            timeout_s=settings.ai_timeout_s,
            max_retries=settings.ai_max_retries,
            budget_s=settings.ai_budget_s,
            max_tokens=settings.ai_max_tokens,
        )


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    content: dict[str, Any]
    # The model that answered, as the server names it (the requested one when it does not).
    model: str
    attempts: int


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_json_content(text: str) -> dict[str, Any]:
    """The JSON object a model wrote. Models asked for raw JSON still wrap it in a Markdown
    fence now and then; that much is forgiven, nothing more."""
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"the model's answer is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(value, dict):
        raise ProviderError(
            f"the model's answer is JSON but not an object ({type(value).__name__})"
        )
    return value


class ChatClient:
    """Calls ``POST {base_url}/chat/completions``. ``transport`` is for tests that need a
    particular network behaviour; the tests of this package use a real local server."""

    def __init__(
        self, config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport

    async def complete_json(
        self, *, model: str, system: str, user: str, temperature: float = 0.0
    ) -> ChatAnswer:
        """The model's JSON object answer to ``system`` + ``user``; ProviderError otherwise."""
        cfg = self.config
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": temperature,
            "max_tokens": cfg.max_tokens,
            "stream": False,
            # JSON mode: supported by Groq, OpenAI, vLLM, llama.cpp's server and Ollama.
            "response_format": {"type": "json_object"},
        }
        headers = {"Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        url = f"{cfg.base_url}/chat/completions"
        deadline = time.monotonic() + cfg.budget_s
        attempt = 0
        problems: list[str] = []
        async with httpx.AsyncClient(transport=self._transport, follow_redirects=False) as client:
            while True:
                attempt += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProviderError(
                        f"no answer within the budget of {cfg.budget_s:g} s "
                        f"({attempt - 1} attempts)"
                    )
                timeout = min(cfg.timeout_s, remaining)
                wait: float | None = None
                try:
                    response = await client.post(
                        url, json=body, headers=headers, timeout=httpx.Timeout(timeout)
                    )
                except httpx.TimeoutException:
                    problem = f"timed out after {timeout:g} s"
                except httpx.TransportError as exc:
                    problem = f"unreachable ({type(exc).__name__}: {exc})"
                else:
                    if response.status_code == 200:
                        return self._answer(response, model, attempt)
                    problem = f"HTTP {response.status_code}{_error_text(response)}"
                    if response.status_code not in _RETRY_STATUSES:
                        raise ProviderError(f"{cfg.base_url} answered {problem}")
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                log_event(
                    log,
                    logging.WARNING,
                    "ai provider attempt failed",
                    url=url,
                    model=model,
                    attempt=attempt,
                    problem=problem,
                )
                if problem not in problems:
                    problems.append(problem)
                if attempt > cfg.max_retries:
                    raise ProviderError(
                        f"{cfg.base_url}: {'; then '.join(problems)} "
                        f"(gave up after {attempt} attempts)"
                    )
                if wait is None:
                    wait = _BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random() / 4)
                if time.monotonic() + wait >= deadline:
                    raise ProviderError(
                        f"{cfg.base_url}: {problem}; waiting {wait:g} s more would overrun "
                        f"the budget of {cfg.budget_s:g} s"
                    )
                await asyncio.sleep(wait)

    @staticmethod
    def _answer(response: httpx.Response, model: str, attempts: int) -> ChatAnswer:
        try:
            doc = response.json()
            message = doc["choices"][0]["message"]
            content = message["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError(
                "the provider's answer is not a chat completion (no choices[0].message.content)"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise ProviderError("the model's answer is empty")
        if doc["choices"][0].get("finish_reason") == "length":
            raise ProviderError("the model's answer was cut off at the token limit")
        answered_by = doc.get("model") if isinstance(doc.get("model"), str) else None
        return ChatAnswer(parse_json_content(content), answered_by or model, attempts)


def _error_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return f": {str(message)[:200]}" if message else ""
