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
    print(
        f"{args.config}: OK — edge {config.edge_id}; sources: {len(sources.modbus)} Modbus, "
        f"{len(sources.opcua)} OPC-UA, {len(sources.mqtt)} MQTT; output {config.output.kind}; "
        f"buffer {config.buffer.path}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edge.buffer import read_stats_readonly

    config = _load(args.config)
    report: dict[str, object] = {"edge_id": config.edge_id}
    if config.buffer.path.exists():
        stats = read_stats_readonly(config.buffer.path)
        report["buffer"] = {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "dropped_total": stats.dropped_total,
            "next_seq": stats.next_seq,
        }
    else:
        report["buffer"] = "no buffer file yet"
    if config.metrics.port:
        url = f"http://{config.metrics.host}:{config.metrics.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                report["daemon"] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            report["daemon"] = json.loads(exc.read() or b"{}") or f"HTTP {exc.code}"
        except OSError as exc:
            report["daemon"] = f"not reachable at {url} ({exc})"
    print(json.dumps(report, indent=2))
    return 0 if isinstance(report.get("daemon"), dict) else 1


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
    check.set_defaults(func=cmd_check_config)

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
