-- 0010: the detector lifecycle. Every trained model is a row: a candidate is validated against
-- the model in service and becomes active or is rejected with the reason; at most one model
-- per machine is active; rollback re-activates the previous one. Bundles are stored signed
-- (Ed25519) so edges verify what they download. Training requests queue in training_jobs and
-- are taken by `rig-cloud trainer` processes (FOR UPDATE SKIP LOCKED).
CREATE TABLE model_registry (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id       TEXT NOT NULL,
    version          INTEGER NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('candidate', 'active', 'rejected', 'retired')),
    strategy         TEXT NOT NULL,
    metrics          JSONB NOT NULL DEFAULT '{}'::jsonb,
    baseline_metrics JSONB,
    reason           TEXT,
    trained_from     TIMESTAMPTZ,
    trained_to       TIMESTAMPTZ,
    training_rows    BIGINT,
    manifest         JSONB NOT NULL,
    bundle           BYTEA NOT NULL,
    bundle_sha256    TEXT NOT NULL,
    created_by       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at     TIMESTAMPTZ,
    CONSTRAINT model_registry_version UNIQUE (machine_id, version)
);
CREATE UNIQUE INDEX model_registry_one_active ON model_registry (machine_id)
    WHERE status = 'active';

CREATE TABLE training_jobs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id   TEXT NOT NULL,
    requested_by TEXT,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    status       TEXT NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'done', 'failed')),
    model_id     BIGINT REFERENCES model_registry (id),
    error        TEXT
);
CREATE INDEX training_jobs_queued ON training_jobs (requested_at) WHERE status = 'queued';
