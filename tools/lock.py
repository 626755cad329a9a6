"""The Python lock files: ``make lock`` writes them, ``make lint``/``make venv`` check them.

Four files at the repository root, each with a SHA-256 hash for every distribution, all
resolved by uv for every platform and Python >= 3.11 (``--universal``), and consistent with
each other (the per-extra files are resolved with ``requirements.lock`` as constraints):

    requirements.lock          every extra: make venv, make test, CI
    requirements-edge.lock     base + edge: deploy/edge-systemd/install.sh, make wheelhouse
    requirements-cloud.lock    base + cloud: the cloud image (API, aggregator)
    requirements-trainer.lock  base + cloud + ml: the trainer image

Each file starts with a line holding a digest of what pyproject.toml declares (dependencies,
extras, requires-python). ``--check`` recomputes it and fails with the command to run when
pyproject.toml changed without relocking, so nobody installs a lock that no longer says what
the project asks for. Relocking keeps every pin that still satisfies pyproject.toml (uv
reads the existing file as preferences); ``--upgrade`` moves everything to the newest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP_PREFIX = "# pyproject-deps-sha256: "
RELOCK = "make lock"

# file name -> the extras it installs (None: all of them)
LOCKS: dict[str, tuple[str, ...] | None] = {
    "requirements.lock": None,
    "requirements-edge.lock": ("edge",),
    "requirements-cloud.lock": ("cloud",),
    "requirements-trainer.lock": ("cloud", "ml"),
}


def deps_digest(pyproject: Path) -> str:
    """A digest of everything in pyproject.toml that changes what gets installed."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    canonical = json.dumps(declared, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stale_locks(root: Path | None = None) -> list[str]:
    """One line per lock file that is missing or was made from another pyproject.toml."""
    root = root or ROOT
    digest = deps_digest(root / "pyproject.toml")
    problems = []
    for name in LOCKS:
        path = root / name
        if not path.exists():
            problems.append(f"{name} is missing")
            continue
        first = path.read_text().splitlines()[:1]
        if not first or first[0] != STAMP_PREFIX + digest:
            problems.append(f"{name} was not made from this pyproject.toml")
    return problems


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("uv is needed to lock: pip install uv (it is in the dev extra)")
    return found


def relock(root: Path = ROOT, *, upgrade: bool = False) -> None:
    digest = deps_digest(root / "pyproject.toml")
    uv = _uv()
    for name, extras in LOCKS.items():
        cmd = [uv, "pip", "compile", "pyproject.toml", "--quiet", "--universal"]
        cmd += ["--python-version", "3.11", "--generate-hashes", "--no-header"]
        cmd += ["--output-file", name]
        if extras is None:
            cmd.append("--all-extras")
        else:
            cmd += [arg for extra in extras for arg in ("--extra", extra)]
            # Same versions as the full lock: the edge runs what the tests ran.
            cmd += ["--constraint", "requirements.lock"]
        if upgrade:
            cmd.append("--upgrade")
        path = root / name
        # uv reads the existing pins as preferences; our stamp line is just a comment to it.
        print(f"locking {name} ...", file=sys.stderr)
        subprocess.run(cmd, cwd=root, check=True)
        body = path.read_text()
        header = (
            f"{STAMP_PREFIX}{digest}\n"
            f"# Made by `{RELOCK}` (tools/lock.py) from pyproject.toml: do not edit.\n"
            f"# Install: pip install --require-hashes -r {name}\n"
        )
        lines = [
            line
            for line in body.splitlines(keepends=True)
            if not line.startswith(STAMP_PREFIX)
            and not line.startswith(f"# Made by `{RELOCK}`")
            and not line.startswith("# Install: pip install --require-hashes")
        ]
        path.write_text(header + "".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.lock", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a lock is stale")
    parser.add_argument("--upgrade", action="store_true", help="newest versions allowed")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_locks()
        if problems:
            for problem in problems:
                print(f"lock: {problem}", file=sys.stderr)
            print(
                f"lock: pyproject.toml's dependencies changed since the lock files were made: "
                f"run `{RELOCK}` and commit the requirements*.lock files with it",
                file=sys.stderr,
            )
            return 1
        return 0
    relock(upgrade=args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
