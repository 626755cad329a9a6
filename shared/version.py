"""The installed version of Rig Alpha, for ``--version`` and the ``*_build_info`` metrics."""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

DISTRIBUTION = "rig-alpha"


@cache
def version() -> str:
    try:
        return _dist_version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def version_line(prog: str) -> str:
    """What ``PROG --version`` prints: the program, its version and the Python running it."""
    return f"{prog} {version()} (Python {platform.python_version()})"
