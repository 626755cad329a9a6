"""``rig-edge``: the edge gateway daemon and its field tools."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from shared.configfile import ConfigError

DEFAULT_CONFIG = Path("/etc/rig-edge/edge.yaml")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from edge.config import load_edge_config

    return load_edge_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.daemon import run_daemon
    from shared.logs import configure_logging

    config = _load(args.config)
    configure_logging("rig-edge", args.log_level or config.log_level)
    run_daemon(config, args.config)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    sources = config.sources
    if args.probe:
        import asyncio

        from edge.probe import probe_sources

        results = asyncio.run(probe_sources(config))
        for r in results:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.source}: {r.target}: {r.detail}")
        if not all(r.ok for r in results):
            print(f"{args.config}: valid, but some sources did not answer", file=sys.stderr)
            return 1
    print(
        f"{args.config}: OK — edge {config.edge_id}; sources: {len(sources.modbus)} Modbus, "
        f"{len(sources.opcua)} OPC-UA, {len(sources.mqtt)} MQTT; output {config.output.kind}; "
        f"buffer {config.buffer.path}"
    )
    return 0


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
    from edge.scan import run_scan_modbus, run_scan_opcua

    try:
        if args.protocol == "modbus":
            units = [int(u) for u in args.units.split(",")]
            tables = ["holding", "input"] if args.table == "both" else [args.table]
            print(
                run_scan_modbus(args.host, args.port, units, args.start, args.end, tables)
                or "no register answered"
            )
        else:
            print(run_scan_opcua(args.endpoint, args.depth))
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(f"scan failed: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig-edge",
        description="Rig Alpha edge gateway: polls rig sensors, buffers every reading durably "
        "in SQLite, scores it, and forwards it to Kafka or the cloud ingest API.",
    )
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
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate the config file and exit")
    add_config(check)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also read every source once (exit 1 if any does not answer)",
    )
    check.set_defaults(func=cmd_check_config)

    scan = sub.add_parser("scan", help="discover Modbus registers or OPC-UA nodes")
    scan_sub = scan.add_subparsers(dest="protocol", required=True)
    scan_modbus = scan_sub.add_parser("modbus", help="which registers answer")
    scan_modbus.add_argument("--host", required=True)
    scan_modbus.add_argument("--port", type=int, default=502)
    scan_modbus.add_argument("--units", default="1", help="comma-separated unit ids")
    scan_modbus.add_argument("--start", type=int, default=0)
    scan_modbus.add_argument("--end", type=int, default=200, help="exclusive")
    scan_modbus.add_argument("--table", choices=["holding", "input", "both"], default="both")
    scan_opcua = scan_sub.add_parser("opcua", help="browse the node tree")
    scan_opcua.add_argument("--endpoint", required=True, help="opc.tcp://host:port/path")
    scan_opcua.add_argument("--depth", type=int, default=6)
    scan.set_defaults(func=cmd_scan)

    status = sub.add_parser("status", help="buffer figures and the running daemon's health")
    add_config(status)
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
