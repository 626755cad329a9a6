"""``rig-sim``: a rig simulator that serves machines' sensors over Modbus TCP."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.configfile import describe_validation_error
from shared.configtypes import KAFKA_TOPIC
from shared.logs import add_log_format_argument
from shared.version import version_line

if TYPE_CHECKING:
    from simulator.config import SimConfig


def _scenario(args: argparse.Namespace) -> SimConfig:
    """The scenario file (if any) with explicitly given flags on top."""
    from simulator.config import SimConfig, load_scenario

    base = load_scenario(args.scenario).model_dump() if args.scenario else {}
    overrides: dict[str, object] = {}
    if args.machines is not None:
        overrides["machines"] = [m.strip() for m in args.machines.split(",") if m.strip()]
    if args.machine_count is not None:
        overrides["machines"] = [f"M{i:03d}" for i in range(1, args.machine_count + 1)]
    for flag, key in (
        ("rate", "rate_hz"),
        ("seed", "seed"),
        ("record", "record_path"),
        ("ground_truth", "ground_truth_path"),
        ("clock_offset_s", "clock_offset_s"),
    ):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    doc = {**base, **overrides}
    for section, pairs in (
        ("modbus", (("modbus_host", "host"), ("modbus_port", "port"))),
        ("opcua", (("opcua_port", "port"),)),
        ("mqtt", (("mqtt_host", "host"), ("mqtt_port", "port"))),
        ("modbus_rtu", (("rtu_link", "link"),)),
    ):
        for flag, key in pairs:
            value = getattr(args, flag)
            if value is not None:
                doc.setdefault(section, {})
                doc[section] = {**doc[section], key: value}
                if section != "modbus":
                    doc[section]["enabled"] = True
    return SimConfig.model_validate(doc)


# Config field -> the `rig-sim run` flag that sets it, for one-line error messages.
_FLAGS = {
    "machines": "--machines",
    "rate_hz": "--rate",
    "seed": "--seed",
    "modbus.host": "--modbus-host",
    "modbus.port": "--modbus-port",
    "record_path": "--record",
    "ground_truth_path": "--ground-truth",
    "clock_offset_s": "--clock-offset-s",
    "opcua.port": "--opcua-port",
    "mqtt.host": "--mqtt-host",
    "mqtt.port": "--mqtt-port",
    "modbus_rtu.link": "--rtu-link",
}


def _flag_errors(exc: ValidationError) -> list[str]:
    """One line per problem, naming the flag and the config field it sets."""
    from shared.configfile import field_path

    lines = []
    for err in exc.errors(include_url=False):
        field = field_path(tuple(err["loc"]))
        # machines[1] -> --machines
        flag = _FLAGS.get(field.split("[")[0], "")
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        got_text = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        where = f"{flag} ({field})" if flag else field
        lines.append(f"{where}: {msg}{got_text}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from shared.configfile import ConfigError
    from shared.logs import configure_logging
    from simulator.server import SimulatorError, run_simulator

    try:
        config = _scenario(args)
    except ConfigError as exc:
        print(f"rig-sim: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        if args.scenario:
            print(describe_validation_error(str(args.scenario), exc), file=sys.stderr)
        else:
            for line in _flag_errors(exc):
                print(f"rig-sim: {line}", file=sys.stderr)
        return 2
    configure_logging("rig-sim", args.log_level, log_format=args.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulator(config, stop)

    try:
        asyncio.run(main())
    except (SimulatorError, OSError, ValueError) as exc:
        print(f"rig-sim: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_register_map(args: argparse.Namespace) -> int:
    from simulator import register_map

    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    if args.format == "markdown":
        print(register_map.__doc__)
        print(register_map.markdown_table())
    else:
        doc = register_map.edge_modbus_source_config(args.host, args.port, machines)
        print(json.dumps(doc, indent=2))
    return 0


def cmd_edge_config(args: argparse.Namespace) -> int:
    import yaml

    from simulator.edge_config import simulator_edge_config

    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    output = (
        {"kind": "kafka", "bootstrap_servers": args.kafka, "topic": KAFKA_TOPIC}
        if args.kafka
        else {"kind": "http", "url": args.ingest_url, "api_key_env": "RIG_INGEST_API_KEY"}
    )
    config = simulator_edge_config(
        sim_host=args.host,
        sim_port=args.port,
        machines=machines,
        output=output,
        buffer_path=args.buffer,
        poll_interval_s=args.poll_interval,
        edge_id=args.edge_id,
    )
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig-sim",
        description="Rig Alpha simulator: machines with 50 core sensors each, served over a "
        "real Modbus TCP server (one unit id per machine; see `rig-sim register-map`).",
    )
    parser.add_argument("--version", action="version", version=version_line("rig-sim"))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="serve simulated machines until SIGINT/SIGTERM",
        description="Serve simulated machines. A --scenario YAML file sets everything "
        "(machines, rate, protocols, states, faults, replays; see simulator/scenarios/); "
        "flags given on the command line override it.",
    )
    run.add_argument("--scenario", type=Path, default=None, help="scenario YAML file")
    run.add_argument("--machines", default=None, help="comma-separated ids (default A,B,C)")
    run.add_argument(
        "--machine-count",
        type=int,
        default=None,
        help="N machines named M001..MNNN (instead of --machines)",
    )
    run.add_argument(
        "--rate", type=float, default=None, help="samples per second per machine (default 1)"
    )
    run.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    run.add_argument("--modbus-host", default=None, help="Modbus TCP host (default 127.0.0.1)")
    run.add_argument("--modbus-port", type=int, default=None, help="Modbus TCP port (default 5020)")
    run.add_argument(
        "--rtu-link",
        type=Path,
        default=None,
        help="serve Modbus RTU on a pty pair; clients open this path",
    )
    run.add_argument("--opcua-port", type=int, default=None, help="serve OPC-UA on this port")
    run.add_argument("--mqtt-host", default=None, help="publish to this MQTT broker")
    run.add_argument("--mqtt-port", type=int, default=None, help="MQTT broker port")
    run.add_argument(
        "--record",
        type=Path,
        default=None,
        help="SQLite file recording every sample served (ground truth)",
    )
    run.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        help="JSON-lines file describing every injected fault",
    )
    run.add_argument(
        "--clock-offset-s",
        type=float,
        default=None,
        help="every device clock runs this many seconds ahead (negative: behind); the "
        "served timestamps change, --record keeps the true time (device_ts_ms beside it)",
    )
    run.add_argument("--log-level", default="INFO")
    add_log_format_argument(run)
    run.set_defaults(func=cmd_run)

    rmap = sub.add_parser("register-map", help="print the Modbus register map")
    rmap.add_argument("--format", choices=["json", "markdown"], default="markdown")
    rmap.add_argument("--machines", default="A,B,C")
    rmap.add_argument("--host", default="127.0.0.1")
    rmap.add_argument("--port", type=int, default=5020)
    rmap.set_defaults(func=cmd_register_map)

    edge = sub.add_parser("edge-config", help="print a rig-edge config that reads this simulator")
    edge.add_argument("--machines", default="A,B,C")
    edge.add_argument("--host", default="127.0.0.1")
    edge.add_argument("--port", type=int, default=5020)
    edge.add_argument("--edge-id", default="sim-edge")
    edge.add_argument("--poll-interval", type=float, default=0.5)
    edge.add_argument("--buffer", type=Path, default=Path("var/edge/buffer.db"))
    edge.add_argument("--kafka", default=None, help="Kafka bootstrap servers (else HTTP)")
    edge.add_argument("--ingest-url", default="http://127.0.0.1:8080/api/v1/ingest")
    edge.set_defaults(func=cmd_edge_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
