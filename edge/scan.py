"""``rig-edge scan <kind> [options]``: discover what a device serves, to help write the config.

Which kinds can scan, their options and what they print is each input's own
(``Input.scan_help``, ``scan_arguments``, ``scan``): for example ``scan modbus`` lists the
register addresses that answer, ``scan opcua`` the node tree with node ids. An input class
is imported only when its scan is asked for.
"""

from __future__ import annotations

import argparse
import asyncio

from edge.inputs import registry


class ScanError(Exception):
    """A scan that cannot start: an input type with no scan, or bad options."""


def scan_parser(kind: str) -> argparse.ArgumentParser:
    """The option parser of ``rig-edge scan <kind>``."""
    cls = registry.input_type(kind).input_class()
    if cls.scan_help is None:
        scannable = [k for k in registry.input_types() if _has_scan(k)]
        raise ScanError(
            f"input type {kind!r} has no scan; scan works for: {', '.join(scannable) or 'none'}"
        )
    parser = argparse.ArgumentParser(prog=f"rig-edge scan {kind}", description=cls.scan_help)
    cls.scan_arguments(parser)
    return parser


def _has_scan(kind: str) -> bool:
    try:
        return registry.input_type(kind).input_class().scan_help is not None
    except ImportError:
        return False


def run_scan(kind: str, argv: list[str]) -> str:
    """Parse ``argv`` with the input's own options and run its scan (argparse exits on
    ``--help`` and on bad options, as for any subcommand)."""
    parser = scan_parser(kind)
    args = parser.parse_args(argv)
    cls = registry.input_type(kind).input_class()
    return asyncio.run(cls.scan(args))
