"""``rig-edge check-config --probe``: read every configured input once before deployment.

Each input probes itself (``Input.probe``) with the same client set-up as when it runs
(credentials, TLS, security policy), so a probe that passes means the daemon can connect.
"""

from __future__ import annotations

from edge.config import EdgeConfig
from edge.inputs import registry
from edge.inputs.base import ProbeResult
from edge.metrics import EdgeMetrics

__all__ = ["ProbeResult", "probe_inputs"]


def _discard(*args: object, **kwargs: object) -> bool:
    return True


async def probe_inputs(config: EdgeConfig) -> list[ProbeResult]:
    """Every input of ``config`` probed in turn, in the order of ``inputs:``."""
    results: list[ProbeResult] = []
    window = config.time_window.window()
    # Metrics of their own: a probe must not count as acquisition anywhere.
    metrics = EdgeMetrics()
    for kind, entries in config.inputs.by_kind().items():
        if not entries:
            continue
        cls = registry.input_type(kind).input_class()
        for entry in entries:
            try:
                each = cls(entry, config.edge_id, _discard, metrics, window=window)
                results += await each.probe()
            except Exception as exc:  # an input's bug is its result, not the tool's crash
                detail = f"probe failed: {type(exc).__name__}: {exc}"
                results.append(ProbeResult(entry.name, kind, False, detail))
    return results
