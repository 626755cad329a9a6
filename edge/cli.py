"""``rig-edge``: the edge gateway daemon and its field tools."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from shared.configfile import ConfigError
from shared.logs import add_log_format_argument
from shared.version import version_line

if TYPE_CHECKING:
    # For the annotation only: the commands import the configuration when they run.
    from edge.config import EdgeConfig
    from edge.inputs.base import ProbeResult

DEFAULT_CONFIG = Path("/etc/rig-edge/edge.yaml")


def _load(path: Path, *, log_deprecations: bool = True) -> EdgeConfig:
    from edge.config import load_edge_config

    return load_edge_config(path, log_deprecations=log_deprecations)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.daemon import run_daemon
    from shared.logs import configure_logging

    # Logging first (at the override or INFO), so what loading says (a deprecated key) is a
    # JSON line like the rest; then at the config's level.
    configure_logging("rig-edge", args.log_level or "INFO", log_format=args.log_format)
    config = _load(args.config)
    configure_logging("rig-edge", args.log_level or config.log_level, log_format=args.log_format)
    run_daemon(config, args.config)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config, log_deprecations=False)  # shown here instead
    for note in config.deprecations:
        print(f"{args.config}: note: {note}", file=sys.stderr)
    for warning in config.input_warnings():
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    # Run on the host that runs the daemon: a secret it cannot read is a config error now,
    # not a failed connection later.
    unreadable = config.secret_problems()
    for problem in unreadable:
        print(f"{args.config}: {problem}", file=sys.stderr)
    if unreadable:
        return 2
    if args.probe:
        import asyncio

        from edge.probe import probe_inputs

        results = asyncio.run(probe_inputs(config))
        for r in results:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.input}: {r.target}: {r.detail}")
        output = [] if args.inputs_only else _probe_output(config)
        for r in output:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.input}: {r.target}: {r.detail}")
        failed = [
            what
            for what, lines in (("inputs", results), ("the output", output))
            if not all(r.ok for r in lines)
        ]
        if failed:
            print(
                f"{args.config}: valid, but {' and '.join(failed)} did not answer as needed",
                file=sys.stderr,
            )
            return 1
    counts = ", ".join(
        f"{len(entries)} {kind}" for kind, entries in config.inputs.by_kind().items() if entries
    )
    print(
        f"{args.config}: OK — edge {config.edge_id}; inputs: {counts}; "
        f"output {config.output.kind}; buffer {config.buffer.path}"
    )
    return 0


def _probe_output(config: EdgeConfig) -> list[ProbeResult]:
    """The configured output asked, with the daemon's own client settings, whether it would
    take this edge's readings (Kafka: metadata and the topic; HTTP: the key and its edge)."""
    if config.output.kind == "kafka":
        from edge.outputs.kafka.probe import probe_kafka

        return probe_kafka(config.output)
    from edge.outputs.http.probe import probe_http

    return probe_http(config.output, config.edge_id)


def cmd_status(args: argparse.Namespace) -> int:
    """The running daemon's /healthz (the same document, status and reasons); when no
    daemon answers, the buffer file's figures read without disturbing it. Exit 0 when the
    daemon is ok or degraded, 1 when it is unhealthy or not running."""
    config = _load(args.config)
    report: dict[str, object] = {"edge_id": config.edge_id}
    daemon: object = None
    if config.metrics.port:
        url = f"http://{config.metrics.host}:{config.metrics.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                daemon = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503: unhealthy, with its reasons
            try:
                daemon = json.loads(exc.read() or b"{}") or f"HTTP {exc.code}"
            except ValueError:
                daemon = f"HTTP {exc.code} from {url}"
        except (OSError, ValueError) as exc:
            daemon = f"not reachable at {url} ({exc})"
    else:
        daemon = "metrics.port is 0: the daemon has no health endpoint"
    if isinstance(daemon, dict):
        report.update(daemon)
        print(json.dumps(report, indent=2))
        return 1 if daemon.get("status") == "unhealthy" else 0
    report["status"] = "not running"
    report["daemon"] = daemon
    report["buffer"] = _buffer_offline(config.buffer.path)
    print(json.dumps(report, indent=2))
    return 1


def _buffer_offline(path: Path) -> object:
    import dataclasses
    import sqlite3

    from edge.buffer import read_stats_readonly

    if not path.exists():
        return "no buffer file yet"
    try:
        return dataclasses.asdict(read_stats_readonly(path))
    except (sqlite3.Error, OSError) as exc:
        return f"unreadable: {type(exc).__name__}: {exc} (the daemon moves a corrupt file aside)"


def cmd_scan(args: argparse.Namespace) -> int:
    from edge.scan import ScanError, run_scan

    try:
        print(run_scan(args.kind, args.options))
    except ScanError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(f"scan failed: {exc}", file=sys.stderr)
        return 1
    return 0


# The input type whose register maps ``import-map`` reads (through the registry, as scan).
IMPORT_MAP_KIND = "modbus"


def cmd_import_map(args: argparse.Namespace) -> int:
    """The input type's own parser takes every option (``rig-edge import-map --help`` is
    its help), as ``rig-edge scan KIND`` does."""
    from edge.inputs import registry

    cls = registry.input_type(IMPORT_MAP_KIND).input_class()
    add_arguments = getattr(cls, "import_map_arguments", None)
    import_map = getattr(cls, "import_map", None)
    if add_arguments is None or import_map is None:
        print(f"import-map: the {IMPORT_MAP_KIND} input offers no import", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="rig-edge import-map",
        description=f"{getattr(cls, 'import_map_help', '')} "
        "(the CSV layout: edge/inputs/modbus/README.md).",
    )
    add_arguments(parser)
    options = parser.parse_args(args.options)
    try:
        text = str(import_map(options))
    except ValueError as exc:  # names the CSV line
        print(f"import-map: {options.csv}: {exc}", file=sys.stderr)
        return 2
    if options.output is None:
        sys.stdout.write(text)
    else:
        options.output.write_text(text, encoding="utf-8")
        print(f"wrote {options.output}; check: rig-edge check-config -c {options.output} --probe")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig-edge",
        description="Rig Alpha edge gateway: polls rig sensors, buffers every reading durably "
        "in SQLite, scores it, and forwards it to Kafka or the cloud ingest API.",
    )
    parser.add_argument("--version", action="version", version=version_line("rig-edge"))
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"YAML config file (default {DEFAULT_CONFIG})",
        )

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    add_config(run)
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override the config's log_level",
    )
    add_log_format_argument(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate the config file and exit")
    add_config(check)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also read every input once and ask the output whether it takes this edge's "
        "readings (Kafka: metadata and the topic; HTTP: the API key and its edge); exit 1 if "
        "any does not answer",
    )
    check.add_argument(
        "--inputs-only",
        action="store_true",
        help="with --probe: probe the inputs only (commissioning before the uplink exists)",
    )
    check.set_defaults(func=cmd_check_config)

    from edge.inputs import registry

    scan = sub.add_parser(
        "scan",
        help="discover what a device serves (Modbus registers, OPC-UA nodes)",
        description="Discover what a device serves, to help write the config. "
        "Each input type has its own options: rig-edge scan KIND --help.",
    )
    scan.add_argument("kind", choices=list(registry.input_types()), help="input type")
    scan.add_argument("options", nargs=argparse.REMAINDER, help="the input type's options")
    scan.set_defaults(func=cmd_scan)

    imports = sub.add_parser(
        "import-map",
        help="a PLC's register map (CSV) as the YAML of a Modbus input",
        description="rig-edge import-map FILE.csv --machine-id A --host H [...]: "
        "rig-edge import-map --help for the options",
        add_help=False,  # --help is the import's own parser's
    )
    imports.add_argument("options", nargs=argparse.REMAINDER, help="FILE.csv and options")
    imports.set_defaults(func=cmd_import_map)

    status = sub.add_parser("status", help="buffer figures and the running daemon's health")
    add_config(status)
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import-map"]:
        # Its options (--help too) belong to the input's own parser: argparse's REMAINDER
        # would not take an option as the first word.
        return cmd_import_map(argparse.Namespace(options=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
