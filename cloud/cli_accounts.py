"""``rig-cloud user ...`` and ``rig-cloud edge-key ...``: accounts from the command line, for
the first admin of a new installation and for scripted provisioning of rigs."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from cloud import accounts
from cloud.fielderror import FieldError
from cloud.settings import CloudSettings, SettingsError


def _password(args: argparse.Namespace) -> str:
    """From --password-file, RIG_USER_PASSWORD, or a prompt; never from the command line,
    where every user of the machine could read it in the process list."""
    if args.password_file:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"--password-file {args.password_file}: {exc}") from None
    if os.environ.get("RIG_USER_PASSWORD"):
        return os.environ["RIG_USER_PASSWORD"]
    if not sys.stdin.isatty():
        raise SettingsError("no password: use --password-file or RIG_USER_PASSWORD")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SettingsError("the two passwords differ")
    return first


def _with_db(
    args: argparse.Namespace,
    work: Callable[[psycopg.Connection], object],
    audit: tuple[str, str] | None = None,
) -> int:
    """``audit``: (action, resource) of a change, recorded in the same transaction."""
    from cloud.cli_audit import cli_wrap
    from cloud.db.migrate import apply_migrations

    if audit is not None:
        work = cli_wrap(*audit, work)

    url = CloudSettings.from_env().require_database_url()
    apply_migrations(url)
    try:
        with psycopg.connect(url) as conn:
            result = work(conn)
    except FieldError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    machines = [m for m in args.machines.split(",") if m] if args.machines else None
    password = _password(args)
    return _with_db(
        args,
        lambda c: accounts.create_user(c, args.username, password, args.role, machines).as_json(),
        audit=("user.create", f"user:{args.username}"),
    )


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password = _password(args)
    return _with_db(
        args,
        lambda c: accounts.set_password(c, args.username, password),
        audit=("user.password_set", f"user:{args.username}"),
    )


def cmd_user_list(args: argparse.Namespace) -> int:
    return _with_db(args, accounts.list_users)


def cmd_user_remove(args: argparse.Namespace) -> int:
    def work(conn: psycopg.Connection) -> None:
        if not accounts.delete_user(conn, args.username):
            raise FieldError("username", f"no user {args.username!r}")

    return _with_db(args, work, audit=("user.delete", f"user:{args.username}"))


def cmd_key_create(args: argparse.Namespace) -> int:
    def work(conn: psycopg.Connection) -> dict[str, str] | None:
        key = accounts.create_edge_key(conn, args.edge_id, "cli", args.machine)
        if args.out:
            # Written 0600: the key is a credential, like the edge's api_key_file.
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(key + "\n")
            return {"edge_id": args.edge_id, "key_id": key.split("_")[1], "written_to": args.out}
        return {"edge_id": args.edge_id, "key_id": key.split("_")[1], "api_key": key}

    return _with_db(args, work, audit=("edge_key.create", f"edge:{args.edge_id}"))


def cmd_key_list(args: argparse.Namespace) -> int:
    return _with_db(args, lambda c: accounts.list_edge_keys(c, args.edge_id))


def cmd_key_revoke(args: argparse.Namespace) -> int:
    def work(conn: psycopg.Connection) -> None:
        if not accounts.revoke_edge_key(conn, args.key_id):
            raise FieldError("key_id", f"no active key {args.key_id!r}")

    return _with_db(args, work, audit=("edge_key.revoke", f"edge_key:{args.key_id}"))


def add_account_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="manage dashboard/API users (needs DATABASE_URL)")
    users = user.add_subparsers(dest="user_command", required=True)
    add = users.add_parser(
        "add", help="create a user; password from --password-file, RIG_USER_PASSWORD or a prompt"
    )
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in accounts.Role])
    add.add_argument("--machines", help="comma-separated machine ids (default: every machine)")
    add.add_argument("--password-file")
    add.set_defaults(func=cmd_user_add)
    passwd = users.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-file")
    passwd.set_defaults(func=cmd_user_passwd)
    users.add_parser("list", help="list users").set_defaults(func=cmd_user_list)
    remove = users.add_parser("remove", help="delete a user")
    remove.add_argument("username")
    remove.set_defaults(func=cmd_user_remove)

    key = sub.add_parser("edge-key", help="manage per-edge ingest API keys (needs DATABASE_URL)")
    keys = key.add_subparsers(dest="key_command", required=True)
    create = keys.add_parser("create", help="issue a key for an edge; printed or written once")
    create.add_argument("edge_id")
    create.add_argument(
        "--out", help="write the key to this file (mode 0600) instead of printing it"
    )
    create.add_argument(
        "--machine",
        action="append",
        default=None,
        metavar="MACHINE_ID",
        help="a machine this edge serves (repeat for each): the key may write readings and "
        "fetch models for these only; without: only machines no other edge serves",
    )
    create.set_defaults(func=cmd_key_create)
    listing = keys.add_parser("list", help="list keys (never the secrets)")
    listing.add_argument("--edge-id")
    listing.set_defaults(func=cmd_key_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its key id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_key_revoke)
