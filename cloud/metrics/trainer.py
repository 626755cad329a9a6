"""The trainer's metrics (``rig-cloud trainer``, metrics port 9472 by default).

- ``rig_trainer_jobs_total{result}``: training jobs finished: ``accepted`` (the candidate is
  in service), ``refused`` (it did not beat the model in service or the validation gate),
  ``failed`` (too little data, database trouble), ``crashed`` (a bug; logged with traceback);
- ``rig_trainer_job_seconds{result}``: how long each took;
- ``rig_trainer_jobs_scheduled_total``: retraining jobs the schedule queued;
- ``rig_trainer_last_job_timestamp_seconds``: when the last job finished (a stuck trainer
  alerts on its age).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RESULTS = ("accepted", "refused", "failed", "crashed")

JOBS = Counter("rig_trainer_jobs", "Training jobs finished, by result", ["result"])
JOB_SECONDS = Histogram(
    "rig_trainer_job_seconds",
    "Time to train, validate and register one candidate, by result",
    ["result"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
SCHEDULED = Counter("rig_trainer_jobs_scheduled", "Retraining jobs queued by the schedule")
LAST_JOB = Gauge(
    "rig_trainer_last_job_timestamp_seconds", "Unix time the last training job finished"
)
for _result in RESULTS:  # every series present from the start, at 0
    JOBS.labels(_result)


def record_job(result: str, seconds: float) -> None:
    JOBS.labels(result).inc()
    JOB_SECONDS.labels(result).observe(seconds)
    LAST_JOB.set_to_current_time()
