"""Training data for one machine from stored history: the 50 core sensors in time order.

Readings the edge already flagged as anomalous are left out (the detectors learn normal
operation), gaps in a sensor are carried forward from its last value (a sensor that never
reported is left NaN for the model's own fill), and the most recent part is held out for
validation, so a candidate is judged on data newer than anything it saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import psycopg

from shared.catalog import CORE_SENSOR_NAMES

_COLUMNS = ", ".join(f'"{c}"' for c in CORE_SENSOR_NAMES)


@dataclass(frozen=True)
class History:
    train: np.ndarray
    held_out: np.ndarray
    start: datetime
    end: datetime

    @property
    def rows(self) -> int:
        return len(self.train) + len(self.held_out)


def forward_fill(block: np.ndarray) -> np.ndarray:
    """Carry each column's last finite value forward over NaNs (leading NaNs stay)."""
    out = block.copy()
    index = np.where(np.isfinite(out), np.arange(len(out))[:, None], 0)
    np.maximum.accumulate(index, axis=0, out=index)
    filled = out[index, np.arange(out.shape[1])]
    never = ~np.isfinite(out) & ~np.isfinite(filled)
    filled[never] = np.nan
    return filled


def load_history(
    conn: psycopg.Connection,
    machine_id: str,
    *,
    days: float,
    now: datetime,
    max_rows: int = 200_000,
    held_out_fraction: float = 0.2,
) -> History:
    """The newest ``max_rows`` normal readings of the last ``days`` days, oldest first."""
    start = now - timedelta(days=days)
    rows = conn.execute(
        f'SELECT "timestamp", {_COLUMNS} FROM sensor_readings '
        'WHERE machine_id = %s AND "timestamp" >= %s AND "timestamp" <= %s '
        "AND coalesce((detection->>'is_anomaly')::boolean, false) = false "
        'ORDER BY "timestamp" DESC LIMIT %s',
        (machine_id, start, now, max_rows),
    ).fetchall()
    if not rows:
        raise LookupError(f"machine {machine_id!r} has no readings in the last {days:g} days")
    rows.reverse()
    block = np.array([r[1:] for r in rows], dtype=np.float64)  # None -> nan
    block = forward_fill(block)
    split = int(len(block) * (1.0 - held_out_fraction))
    return History(block[:split], block[split:], rows[0][0], rows[-1][0])
