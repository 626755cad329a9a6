"""Users for tests: created straight in the database (as ``rig-cloud user add`` does) and
logged in through the real login endpoint."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import psycopg

from cloud.accounts import create_user


def add_user(database_url: str, username: str, role: str, machines: list[str] | None = None) -> str:
    """Creates the user and returns its (random) password."""
    password = secrets.token_urlsafe(12)
    with psycopg.connect(database_url) as conn, conn.transaction():
        create_user(conn, username, password, role, machines)
    return password


def login(client: Any, username: str, password: str) -> str:
    """Logs ``client`` (TestClient or httpx.Client) in; returns the bearer token."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_token(base_url: str, database_url: str, username: str = "admin") -> str:
    """An admin's bearer token for a running API at ``base_url``."""
    password = add_user(database_url, username, "admin")
    with httpx.Client(base_url=base_url, timeout=10) as client:
        return login(client, username, password)
