"""Simulator benchmark: achieved sample rate for 1, 10 and 100 machines at 100 Hz each,
served by one process over a real Modbus TCP server (a client polls it meanwhile).

Prints progress on stderr and one JSON object on the last line of stdout:
{"machines_1": {"set_hz":..., "achieved_hz":..., "rate_error_pct":..., "cpu_pct":...}, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from pymodbus.client import AsyncModbusTcpClient

from simulator.config import SimConfig
from simulator.server import SimulatorRun, run_simulator
from tests.support.processes import free_port


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(machines: int, rate_hz: float, seconds: float) -> dict[str, float]:
    port = free_port()
    config = SimConfig.model_validate(
        {
            "machines": [f"M{i:03d}" for i in range(1, machines + 1)],
            "rate_hz": rate_hz,
            "modbus": {"port": port},
        }
    )
    stop, started = asyncio.Event(), asyncio.Event()
    # run_simulator puts its engine in here once built; a finished run always has one, so
    # the field is not Optional for everyone else who reads a SimulatorRun.
    run = SimulatorRun(engine=None)  # type: ignore[arg-type]
    task = asyncio.create_task(run_simulator(config, stop, started=started, run=run))
    await started.wait()
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    reads = 0
    cpu0, wall0, ticks0 = _cpu_s(), time.monotonic(), run.ticks
    deadline = wall0 + seconds
    while time.monotonic() < deadline:
        # A client polling one unit at 20 Hz: serving must not disturb the tick rate.
        await client.read_holding_registers(0, count=110, device_id=1 + reads % machines)
        reads += 1
        await asyncio.sleep(0.05)
    ticks = run.ticks - ticks0
    wall = time.monotonic() - wall0
    cpu = _cpu_s() - cpu0
    client.close()
    stop.set()
    await task
    achieved = ticks / wall
    return {
        "set_hz": rate_hz,
        "achieved_hz": round(achieved, 2),
        "rate_error_pct": round(abs(achieved - rate_hz) / rate_hz * 100.0, 2),
        "samples_per_s": round(achieved * machines),
        "skipped_ticks": run.skipped_ticks,
        "cpu_pct": round(100.0 * cpu / wall, 1),
        "modbus_reads": reads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    result: dict[str, object] = {}
    for machines in (1, 10, 100):
        print(f"{machines} machine(s) at {args.rate} Hz for {args.seconds} s …", file=sys.stderr)
        result[f"machines_{machines}"] = asyncio.run(_measure(machines, args.rate, args.seconds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
