"""Prometheus metrics of the cloud processes: the API (``/metrics`` on its own port), the
aggregator and the trainer (each on a metrics port of its own, on by default).

Every process exports, on the default ``prometheus_client`` registry, the process and Python
collectors (``process_*``, ``python_*``) and ``rig_build_info{component,version,python}``;
the names each component adds are listed in its module (api.py, aggregator.py, trainer.py)
and checked against the Grafana dashboards and alert rules in deploy/cloud/ by
cloud/metrics/test_exported.py.
"""

from __future__ import annotations

import logging
import platform

from prometheus_client import Gauge, start_http_server

from shared.logs import log_event
from shared.version import version

log = logging.getLogger(__name__)

BUILD_INFO = Gauge(
    "rig_build_info",
    "Always 1; the labels say which component, version and Python run",
    ["component", "version", "python"],
)

# Default ports (Prometheus' exporter registry has no claim on 9471-9473).
AGGREGATOR_METRICS_PORT = 9471
TRAINER_METRICS_PORT = 9472


def mark_build(component: str) -> None:
    BUILD_INFO.labels(component, version(), platform.python_version()).set(1)


def serve_metrics(component: str, host: str, port: int) -> bool:
    """Serves /metrics on host:port in a daemon thread (0: off). A port that is taken is
    logged as an error and the process goes on: losing metrics must not stop ingest."""
    mark_build(component)
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log_event(
            log,
            logging.ERROR,
            "metrics port unavailable; metrics off",
            component=component,
            address=f"{host}:{port}",
            error=str(exc),
        )
        return False
    log_event(log, logging.INFO, "metrics listening", url=f"http://{host}:{port}/metrics")
    return True
