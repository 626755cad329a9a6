"""Processes that die or vanish: the edge, an aggregator, the Kafka broker, PostgreSQL.

Every kill is ``SIGKILL`` (no clean-up code runs) unless the name says "stop". Besides kills
at arbitrary moments, the edge and an aggregator are stopped by failpoints
(``RIG_FAILPOINTS``, see ``shared/failpoints.py``) exactly inside the crash windows of the
delivery guarantee, so those windows are exercised on every run, not by luck.
"""

from __future__ import annotations

import time

from benchmarks.faults.harness import Scenario, say, wait_for

# Seconds of normal streaming before the first fault and after the last recovery: enough for
# several forwarding rounds and aggregator batches either side.
WARM_S = 4.0
TAIL_S = 3.0


def _start_pipeline(sc: Scenario, aggregators: int = 1) -> None:
    for _ in range(aggregators):
        sc.start_aggregator()
    sc.start_sim()
    sc.start_edge()
    sc.wait_flowing()
    time.sleep(WARM_S)


def edge_sigkill(sc: Scenario) -> None:
    """SIGKILL the edge mid-stream, then let it die at two failpoints: after Kafka confirmed
    a batch but before the buffer deleted it (the batch is sent again: the cloud's key must
    drop the repeats), and right after a buffer commit."""
    _start_pipeline(sc)
    say("  SIGKILL the edge")
    sc.kill_edge()
    time.sleep(1.0)
    for point in ("edge.forwarder.after_send=3", "edge.buffer.after_commit=25"):
        say(f"  restart the edge with failpoint {point}")
        edge = sc.start_edge(env={"RIG_FAILPOINTS": point})
        wait_for(lambda e=edge: not e.running, 60, f"failpoint {point} to fire")
        sc.edge_died()
        sc.notes.setdefault("failpoints_fired", []).append(point.split("=")[0])
    sc.start_edge()
    sc.fault_ended()
    time.sleep(TAIL_S)


def aggregator_sigkill(sc: Scenario) -> None:
    """Three aggregators in one group. One dies at the failpoint between its database commit
    and its offset commit (its partitions are redelivered to the others: the key drops the
    repeats); another is SIGKILLed at an arbitrary moment. The survivors take over."""
    sc.start_aggregator(env={"RIG_FAILPOINTS": "cloud.aggregator.after_db_commit=20"})
    sc.start_aggregator()
    sc.start_aggregator()
    sc.start_sim()
    sc.start_edge()
    sc.wait_flowing()
    first = sc.aggregators[0]
    wait_for(lambda: not first.running, 90, "the aggregator failpoint to fire")
    first.killed_on_purpose = True
    say("  aggregator 1 died at cloud.aggregator.after_db_commit")
    sc.notes["failpoints_fired"] = ["cloud.aggregator.after_db_commit"]
    sc.fault_ended()
    time.sleep(2.0)
    say("  SIGKILL aggregator 2")
    sc.aggregators[1].kill()
    sc.fault_ended()
    time.sleep(TAIL_S)


def kafka_stop_30s(sc: Scenario) -> None:
    """Stop the broker (SIGTERM, a clean shutdown) for 30 s while the edge keeps polling."""
    _start_pipeline(sc)
    say("  stopping Kafka for 30 s")
    sc.infra.broker.stop()
    time.sleep(30.0)
    sc.infra.broker.start()
    say("  Kafka is back")
    sc.fault_ended()
    time.sleep(TAIL_S)


def kafka_sigkill(sc: Scenario) -> None:
    """``kill -9`` the broker mid-stream (no clean shutdown: log recovery on restart)."""
    _start_pipeline(sc)
    say("  SIGKILL Kafka")
    sc.infra.broker.kill()
    time.sleep(5.0)
    sc.infra.broker.start()
    say("  Kafka is back")
    sc.fault_ended()
    time.sleep(TAIL_S)


def postgres_restart(sc: Scenario) -> None:
    """Stop PostgreSQL (fast shutdown) for 10 s, then an immediate shutdown (as a crash:
    WAL recovery at the next start) with a quick restart."""
    _start_pipeline(sc)
    pg = sc.infra.pg
    say("  PostgreSQL fast stop for 10 s")
    pg.stop("fast")
    time.sleep(10.0)
    pg.start()
    sc.fault_ended()
    time.sleep(2.0)
    say("  PostgreSQL immediate stop (crash), restart")
    pg.stop("immediate")
    time.sleep(2.0)
    pg.start()
    sc.fault_ended()
    time.sleep(TAIL_S)
