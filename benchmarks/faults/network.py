"""The network between the edge and Kafka cut for 60 s.

The edge and the simulator it polls run in a network namespace; the broker is reached over a
veth pair (``benchmarks.faults.netns``) whose host end is taken down, as if a cable were
pulled: the edge keeps polling and buffering, its Kafka connections time out, and once the
link is back it drains the backlog beside live data.
"""

from __future__ import annotations

import time

from benchmarks.faults.harness import Scenario, ScenarioFailed, say
from benchmarks.faults.processes import TAIL_S, WARM_S

CUT_S = 60.0


def network_cut_60s(sc: Scenario) -> None:
    netns = sc.infra.netns
    bootstrap = sc.infra.broker.extra_bootstrap
    if netns is None or bootstrap is None:
        raise ScenarioFailed(f"no network namespace: {sc.infra.netns_error}")
    sc.netns = netns
    sc.start_aggregator()
    sc.start_sim()
    sc.write_edge_config(bootstrap=bootstrap)
    sc.start_edge()
    sc.wait_flowing()
    time.sleep(WARM_S)
    say(f"  link down for {CUT_S:.0f} s")
    netns.link(up=False)
    try:
        time.sleep(CUT_S / 2)
        health = sc.edge_health() or {}
        sc.notes["buffered_mid_cut"] = health.get("buffer", {}).get("depth")
        time.sleep(CUT_S / 2)
    finally:
        netns.link(up=True)
    say("  link up")
    sc.fault_ended()
    time.sleep(TAIL_S)
