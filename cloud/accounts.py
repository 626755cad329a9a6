"""Users, roles, sessions and per-edge API keys, stored in PostgreSQL.

Passwords are hashed with argon2id. Session tokens and edge API keys are 256-bit random
strings handed out once; only their SHA-256 is stored, so a copy of the database logs nobody
in. Sessions live in the database rather than in a signed cookie, so every API process
behind a load balancer sees a logout or a disabled user at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import EllipsisType

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloud.fielderror import FieldError, NotFoundError
from shared.message import EDGE_ID_RE, MACHINE_ID_RE

SESSION_LIFETIME = timedelta(hours=12)
# A session unused this long ends before its absolute lifetime (RIG_SESSION_IDLE_MINUTES).
SESSION_IDLE = timedelta(minutes=30)
# Reserved: the bootstrap key's name in API answers; an issued key may not take it, so no
# per-edge key can ever be mistaken for the bootstrap key.
RESERVED_EDGE_IDS = frozenset({"default"})
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 10
_KEY_PREFIX = "rig_"

# argon2id with the library's defaults (RFC 9106 "second recommended" profile).
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the response time the same,
# so a login form does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


ALL_ROLES: frozenset[Role] = frozenset(Role)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    # None: every machine.
    machines: tuple[str, ...] | None

    def may_see(self, machine_id: str) -> bool:
        return self.machines is None or machine_id in self.machines

    def as_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "role": self.role.value,
            "machines": list(self.machines) if self.machines is not None else None,
        }


@dataclass(frozen=True, slots=True)
class EdgeKey:
    key_id: str
    edge_id: str
    # The machines the key may write and fetch models for; None: issued before binding.
    machines: tuple[str, ...] | None = None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def validate_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise FieldError("username", "1-64 characters of letters, digits, _ . @ -")
    return username


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise FieldError("password", "must be at most 1024 characters")
    return password


def _user(row: tuple[str, str, list[str] | None]) -> User:
    username, role, machines = row
    return User(username, Role(role), tuple(machines) if machines is not None else None)


def create_user(
    conn: psycopg.Connection,
    username: str,
    password: str,
    role: Role | str,
    machines: list[str] | None = None,
) -> User:
    validate_username(username)
    validate_password(password)
    try:
        role = Role(role)
    except ValueError:
        raise FieldError("role", f"must be one of {', '.join(r.value for r in Role)}") from None
    row = conn.execute(
        "INSERT INTO users (username, password_hash, role, machines) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (username) DO NOTHING RETURNING username, role, machines",
        (username, _hasher.hash(password), role.value, machines),
    ).fetchone()
    if row is None:
        raise FieldError("username", f"user {username!r} already exists")
    return _user(row)


def set_password(conn: psycopg.Connection, username: str, password: str) -> None:
    validate_password(password)
    updated = conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE username = %s",
        (_hasher.hash(password), username),
    ).rowcount
    if not updated:
        raise NotFoundError("username", f"no user {username!r}")
    # A new password ends every session of the old one.
    conn.execute("DELETE FROM user_sessions WHERE username = %s", (username,))


def update_user(
    conn: psycopg.Connection,
    username: str,
    *,
    role: Role | str | None = None,
    machines: list[str] | EllipsisType | None = ...,
    disabled: bool | None = None,
) -> User:
    current = get_user(conn, username, include_disabled=True)
    if current is None:
        raise NotFoundError("username", f"no user {username!r}")
    new_role = Role(role) if role is not None else current.role
    new_machines = current.machines if isinstance(machines, EllipsisType) else machines
    conn.execute(
        "UPDATE users SET role = %s, machines = %s, disabled = coalesce(%s, disabled), "
        "updated_at = now() WHERE username = %s",
        (
            new_role.value,
            list(new_machines) if new_machines is not None else None,
            disabled,
            username,
        ),
    )
    if disabled:
        conn.execute("DELETE FROM user_sessions WHERE username = %s", (username,))
    updated = get_user(conn, username, include_disabled=True)
    assert updated is not None
    return updated


def delete_user(conn: psycopg.Connection, username: str) -> bool:
    return bool(conn.execute("DELETE FROM users WHERE username = %s", (username,)).rowcount)


def get_user(
    conn: psycopg.Connection, username: str, include_disabled: bool = False
) -> User | None:
    row = conn.execute(
        "SELECT username, role, machines FROM users WHERE username = %s"
        + ("" if include_disabled else " AND NOT disabled"),
        (username,),
    ).fetchone()
    return _user(row) if row else None


def list_users(conn: psycopg.Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT username, role, machines, disabled, created_at FROM users ORDER BY username"
    ).fetchall()
    return [
        {**_user((u, r, m)).as_json(), "disabled": d, "created_at": c.isoformat()}
        for u, r, m, d, c in rows
    ]


def hash_password(password: str) -> str:
    """argon2id of ``password``: CPU- and memory-heavy, call it outside a pooled connection."""
    return _hasher.hash(password)


def login_record(conn: psycopg.Connection, username: str) -> tuple[User, str] | None:
    """The enabled user and their stored hash, or None: a short query, so the slow hash check
    (``check_password``) runs after the connection went back to the pool."""
    row = conn.execute(
        "SELECT username, role, machines, password_hash FROM users "
        "WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    return None if row is None else (_user(row[:3]), row[3])


def check_password(stored: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, new hash when the stored one needs rehashing). ``stored`` None: checked against
    a dummy hash, so an unknown user costs the same time as a wrong password."""
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if stored is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored) else None)


def store_rehash(conn: psycopg.Connection, username: str, old: str, new: str) -> None:
    # Only if the hash is still the one verified (a concurrent password change wins).
    conn.execute(
        "UPDATE users SET password_hash = %s WHERE username = %s AND password_hash = %s",
        (new, username, old),
    )


def set_password_hash(
    conn: psycopg.Connection, username: str, password_hash: str, keep_session: str | None = None
) -> None:
    """Store a hash made by ``hash_password``; every session of the user ends except
    ``keep_session`` (the one that changed its own password)."""
    updated = conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE username = %s",
        (password_hash, username),
    ).rowcount
    if not updated:
        raise NotFoundError("username", f"no user {username!r}")
    conn.execute(
        "DELETE FROM user_sessions WHERE username = %s AND token_hash IS DISTINCT FROM %s",
        (username, _digest(keep_session) if keep_session else None),
    )


def authenticate(conn: psycopg.Connection, username: str, password: str) -> User | None:
    row = conn.execute(
        "SELECT username, role, machines, password_hash FROM users "
        "WHERE username = %s AND NOT disabled",
        (username,),
    ).fetchone()
    stored = row[3] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(stored):
        conn.execute(
            "UPDATE users SET password_hash = %s WHERE username = %s",
            (_hasher.hash(password), username),
        )
    return _user(row[:3])


def create_session(
    conn: psycopg.Connection, username: str, lifetime: timedelta = SESSION_LIFETIME
) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO user_sessions (token_hash, username, expires_at) VALUES (%s, %s, now() + %s)",
        (_digest(token), username, lifetime),
    )
    return token


def session_user(
    conn: psycopg.Connection, token: str, idle: timedelta = SESSION_IDLE
) -> User | None:
    """The live session's user, or None for an unknown, expired, idle or disabled one."""
    if not token or len(token) > 256:
        return None
    row = conn.execute(
        "UPDATE user_sessions s SET last_seen = now() FROM users u "
        "WHERE s.token_hash = %s AND s.expires_at > now() AND s.last_seen > now() - %s "
        "AND u.username = s.username AND NOT u.disabled "
        "RETURNING u.username, u.role, u.machines",
        (_digest(token), idle),
    ).fetchone()
    return _user(row) if row else None


def end_session(conn: psycopg.Connection, token: str) -> None:
    conn.execute("DELETE FROM user_sessions WHERE token_hash = %s", (_digest(token),))


def purge_expired_sessions(conn: psycopg.Connection) -> int:
    return conn.execute("DELETE FROM user_sessions WHERE expires_at <= now()").rowcount


def create_edge_key(
    conn: psycopg.Connection,
    edge_id: str,
    created_by: str | None,
    machines: list[str] | None = None,
) -> str:
    """A new ingest key for ``edge_id``, bound to ``machines`` (None: unbound, then it may
    touch only machines no other edge serves); the plain key is returned once, never stored."""
    if not EDGE_ID_RE.fullmatch(edge_id):
        # The wire format's rule: a key for an id no reading may carry would be useless.
        raise FieldError(
            "edge_id",
            "1-64 characters of letters, digits, _ . : -, starting with a letter or digit",
        )
    if edge_id.lower() in RESERVED_EDGE_IDS:
        raise FieldError("edge_id", f"{edge_id!r} is reserved for the bootstrap key")
    if machines is not None:
        bad = [m for m in machines if not MACHINE_ID_RE.fullmatch(m)]
        if bad:
            raise FieldError("machines", f"not a machine id: {bad[0]!r}")
        machines = sorted(set(machines))
    key_id = secrets.token_hex(6)
    key = f"{_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO edge_api_keys (key_id, edge_id, key_hash, created_by, machines) "
        "VALUES (%s, %s, %s, %s, %s)",
        (key_id, edge_id, _digest(key), created_by, machines),
    )
    return key


def verify_edge_key(conn: psycopg.Connection, key: str) -> EdgeKey | None:
    if not key.startswith(_KEY_PREFIX) or len(key) > 256:
        return None
    row = conn.execute(
        "UPDATE edge_api_keys SET last_used = now() WHERE key_hash = %s AND revoked_at IS NULL "
        "RETURNING key_id, edge_id, machines",
        (_digest(key),),
    ).fetchone()
    if row is None:
        return None
    return EdgeKey(row[0], row[1], tuple(row[2]) if row[2] is not None else None)


def machine_edge(conn: psycopg.Connection, machine_id: str) -> str | None:
    """The edge whose reading of ``machine_id`` is the newest stored (index on (machine_id,
    timestamp)), or None: who serves the machine, for keys issued without machines."""
    row = conn.execute(
        'SELECT edge_id FROM sensor_readings WHERE machine_id = %s ORDER BY "timestamp" DESC '
        "LIMIT 1",
        (machine_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def revoke_edge_key(conn: psycopg.Connection, key_id: str) -> bool:
    return bool(
        conn.execute(
            "UPDATE edge_api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        ).rowcount
    )


def list_edge_keys(conn: psycopg.Connection, edge_id: str | None = None) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT key_id, edge_id, created_at, created_by, last_used, revoked_at, machines "
        "FROM edge_api_keys WHERE %(edge)s::text IS NULL OR edge_id = %(edge)s "
        "ORDER BY created_at",
        {"edge": edge_id},
    ).fetchall()
    return [
        {
            "key_id": k,
            "edge_id": e,
            "created_at": c.isoformat(),
            "created_by": b,
            "last_used": u.isoformat() if u else None,
            "revoked_at": r.isoformat() if r else None,
            "machines": m,
        }
        for k, e, c, b, u, r, m in rows
    ]
