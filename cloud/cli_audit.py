"""``rig-cloud audit ...``: verify the audit trail, sign its chain heads, create the keys,
list events; and the trail's part of ``rig-cloud maintain`` (month partitions ahead, months
past retention dropped, recorded and signed). See docs/audit.md."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from cloud.audit import store
from cloud.audit.settings import AuditSettings
from cloud.settings import SettingsError


def _connect(args: argparse.Namespace, work: Callable[[psycopg.Connection], Any]) -> Any:
    from cloud.cli import _settings_with_database
    from cloud.db.migrate import apply_migrations

    settings, pg = _settings_with_database(args)
    try:
        apply_migrations(settings.database_url)
        with psycopg.connect(settings.database_url) as conn, conn.transaction():
            return work(conn)
    finally:
        if pg is not None:
            pg.stop()


def _public_key(args: argparse.Namespace, settings: AuditSettings) -> Any:
    if args.public_key:
        return store.load_public_key(str(args.public_key))
    return store.configured_public_key(settings)


def cmd_verify(args: argparse.Namespace) -> int:
    settings = AuditSettings.from_env()
    public = _public_key(args, settings)
    checkpoint_file = args.checkpoint_file or settings.checkpoint_file
    report = _connect(args, lambda conn: store.verify(conn, public, checkpoint_file))
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        rows = ", ".join(f"{c} {v['rows']}" for c, v in report["chains"].items())
        signed = (
            f"{report['checkpoints_checked']} signed checkpoint(s) hold, latest "
            f"{report['latest_checkpoint']}"
            if report["signature_checked"]
            else "signatures NOT checked (no --public-key or RIG_AUDIT_VERIFY_KEY_FILE)"
        )
        print(f"audit trail intact: rows {rows}; {signed}")
    else:
        problem = report["problem"]
        print(
            f"audit trail TAMPERED: {problem['category']} row {problem['seq']} "
            f"{problem['kind']}: {problem['message']}"
        )
    # 1: tampered; 3: intact but signatures were not checked when a key was required.
    if not report["ok"]:
        return 1
    return 3 if args.require_signature and not report["signature_checked"] else 0


def cmd_sign(args: argparse.Namespace) -> int:
    settings = AuditSettings.from_env()
    key = args.key or settings.signing_key_file
    if key is None:
        raise SettingsError("no signing key: --key or RIG_AUDIT_SIGNING_KEY_FILE")
    checkpoint_file = args.checkpoint_file or settings.checkpoint_file
    checkpoint = _connect(
        args, lambda conn: store.create_checkpoint(conn, str(key), checkpoint_file)
    )
    print(json.dumps({"key_id": checkpoint.key_id, **json.loads(checkpoint.statement)}))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from shared.model_bundle import generate_keypair, key_id

    private, public = generate_keypair()
    out = Path(args.out)
    # O_EXCL: never reuse (or keep the mode of) a file that already exists.
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SettingsError(f"--out {out}: exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public_path = out.with_suffix(".pub")
    public_path.write_bytes(public)
    print(json.dumps({"private": str(out), "public": str(public_path), "key_id": key_id(public)}))
    if args.detail_key:
        detail = Path(args.detail_key)
        try:
            fd = os.open(detail, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SettingsError(f"--detail-key {detail}: exists") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(32))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    filters = store.Filters(
        actor=args.actor,
        action=args.action,
        resource=args.resource,
        since=datetime.fromisoformat(args.since) if args.since else None,
    )
    rows = _connect(args, lambda conn: store.query(conn, filters, args.limit))
    for row in rows:
        print(json.dumps(row, sort_keys=True) if args.json else _line(row))
    return 0


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['at']} {row['category']}#{row['seq']} {row['actor'] or '-'} "
        f"{row['ip'] or '-'} {row['action']} {row['resource']} {row['outcome']}"
    )


def maintain(database_url: str) -> dict[str, Any]:
    """Month partitions ahead, months past retention dropped (each drop recorded in the
    ``audit`` chain), then the heads signed if a key is configured."""
    settings = AuditSettings.from_env()
    with psycopg.connect(database_url) as conn, conn.transaction():
        created = store.ensure_partitions(conn)
        dropped = store.drop_expired(conn, settings.retention_months)
        signed = None
        if settings.signing_key_file is not None:
            signed = store.create_checkpoint(
                conn, str(settings.signing_key_file), settings.checkpoint_file
            ).key_id
    return {"partitions_created": created, "dropped": dropped, "signed_with": signed}


def add_audit_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_db: Callable[[argparse.ArgumentParser], None],
) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit trail (docs/audit.md)")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify", help="check every chain and signed checkpoint; exit 1 and the row if tampered"
    )
    add_db(verify)
    verify.add_argument("--public-key", type=Path, help="default: RIG_AUDIT_VERIFY_KEY_FILE")
    verify.add_argument("--checkpoint-file", type=Path, help="default: RIG_AUDIT_CHECKPOINT_FILE")
    verify.add_argument(
        "--require-signature", action="store_true", help="exit 3 if no key to check them"
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)
    sign = commands.add_parser("sign", help="sign the chain heads now (also hourly by serve)")
    add_db(sign)
    sign.add_argument("--key", type=Path, help="default: RIG_AUDIT_SIGNING_KEY_FILE")
    sign.add_argument("--checkpoint-file", type=Path, help="default: RIG_AUDIT_CHECKPOINT_FILE")
    sign.set_defaults(func=cmd_sign)
    keygen = commands.add_parser("keygen", help="create the Ed25519 signing key pair")
    keygen.add_argument("--out", required=True, help="private key file (0600); public: .pub")
    keygen.add_argument("--detail-key", help="also create an AES-256 detail key file here")
    keygen.set_defaults(func=cmd_keygen)
    listing = commands.add_parser("list", help="newest events first")
    add_db(listing)
    listing.add_argument("--actor")
    listing.add_argument("--action", help="a prefix, e.g. threshold.")
    listing.add_argument("--resource", help="a substring")
    listing.add_argument("--since", help="ISO time with zone")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)


def start_signer(database_url: str) -> Any:
    """``rig-cloud serve``'s hourly audit upkeep on a thread of its own: the month partitions
    ahead (so rows never pile up in a default partition that retention cannot drop), and the
    chain heads signed when RIG_AUDIT_SIGNING_KEY_FILE is set (every RIG_AUDIT_SIGN_INTERVAL_S)."""
    from cloud.db.partitions import MaintenanceThread

    settings = AuditSettings.from_env()
    key = settings.signing_key_file

    def upkeep() -> object:
        with psycopg.connect(database_url) as conn, conn.transaction():
            store.ensure_partitions(conn)
            if key is None:
                return None
            return store.create_checkpoint(conn, str(key), settings.checkpoint_file).key_id

    return MaintenanceThread(
        upkeep, interval_s=settings.sign_interval_s, name="audit-upkeep"
    ).start()


_SECRET_KEYS = frozenset({"api_key", "password", "token"})


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in _SECRET_KEYS else _redacted(v)) for k, v in value.items()}
    as_json = getattr(value, "as_json", None)
    return _redacted(as_json()) if callable(as_json) else value


def cli_wrap(
    action: str,
    resource: str,
    work: Callable[..., Any],
    before: Callable[[psycopg.Connection], Any] | None = None,
) -> Callable[..., Any]:
    """``work`` (a store function taking the connection first) recorded as done by the
    operating-system user running ``rig-cloud``, in the same transaction; secrets in its
    result (a new key, a password) are not recorded."""
    from cloud.audit.context import cli_entry

    def safe(result: Any) -> Any:
        value = _redacted(result)
        return value if isinstance(value, dict | list | str | int | float | bool) else None

    return store.wrap(cli_entry(action, resource), work, before=before, after=safe)


def record_cli(database_url: str, action: str, resource: str, after: Any) -> None:
    """A ``rig-cloud`` action whose work commits in transactions of its own (training
    registers the model itself): recorded right after, with its outcome."""
    from cloud.audit.context import cli_entry

    entry = cli_entry(action, resource)
    with psycopg.connect(database_url) as conn, conn.transaction():
        store.append(conn, store.Entry(**{**entry.__dict__, "after": _redacted(after)}))
