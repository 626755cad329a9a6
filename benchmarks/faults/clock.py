"""A device clock a century ahead (the simulator's clock fault, ``simulator/faults.py``).

Machine 1's clock jumps 100 years ahead for a while and comes back; machine 2's is wrong all
along; machine 3 keeps good time. The Modbus timestamp register serves the wrong time, the
simulator's record keeps the true one, and the accounting matches stored rows to samples by
their values. The edge is expected to replace a device time outside the acceptance window by
its receive time and count it (``rig_edge_device_clock_replaced``), so every reading is
stored near its true time; an edge that passes the wrong time on gets its readings
dead-lettered by the cloud ("timestamp out of range"), which is accounted too, but shows in
``receive_time_rows`` = 0.
"""

from __future__ import annotations

import time

import yaml

from benchmarks.faults.harness import Scenario, say
from benchmarks.faults.processes import TAIL_S

CENTURY_S = 100 * 365.25 * 86400
JUMP_AT_S = 6.0
JUMP_FOR_S = 12.0


def device_clock_ahead(sc: Scenario) -> None:
    first, second = sc.machines[0], sc.machines[1]
    scenario = sc.dir / "clock-scenario.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "machines": sc.machines,
                "faults": [
                    {
                        "kind": "clock",
                        "machine": first,
                        "start_s": JUMP_AT_S,
                        "duration_s": JUMP_FOR_S,
                        "offset_s": CENTURY_S,
                    },
                    {
                        "kind": "clock",
                        "machine": second,
                        "start_s": 0.0,
                        "duration_s": 86_400.0,
                        "offset_s": CENTURY_S,
                    },
                ],
            }
        )
    )
    sc.start_aggregator()
    sc.start_sim(extra_args=["--scenario", str(scenario)])
    sc.start_edge()
    sc.wait_flowing()
    say(f"  {first}: clock 100 years ahead from {JUMP_AT_S:.0f} s for {JUMP_FOR_S:.0f} s")
    remaining = sc.sim_started + JUMP_AT_S + JUMP_FOR_S - time.time()
    time.sleep(max(0.0, remaining))
    sc.fault_ended()
    time.sleep(TAIL_S)
