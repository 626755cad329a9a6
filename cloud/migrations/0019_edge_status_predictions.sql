-- 0019: what each edge reports about itself (shared/edge_status.py, sent with its batches every
-- few seconds), for the fleet page, the "edge offline" and "buffer drops" alert rules; and the
-- predicted anomalies the edges' forecasts raise (probability_ahead over the alerting bound),
-- each later confirmed by an actual anomaly of that machine within the horizon, or expired.
ALTER TABLE edges
    ADD COLUMN version TEXT,
    ADD COLUMN status TEXT,
    ADD COLUMN uptime_s DOUBLE PRECISION,
    ADD COLUMN dropped_total BIGINT,
    ADD COLUMN machines TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN inputs JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN models JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN thresholds JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN status_reported_at TIMESTAMPTZ;
-- A scoped operator sees the edges serving one of their machines.
CREATE INDEX edges_machines ON edges USING gin (machines);

CREATE TABLE predicted_anomalies (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id      TEXT NOT NULL,
    edge_id         TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    predicted_at    TIMESTAMPTZ NOT NULL,   -- the reading whose forecast raised it
    horizon_until   TIMESTAMPTZ NOT NULL,   -- confirmed by an anomaly up to then, else expires
    probability     DOUBLE PRECISION NOT NULL CHECK (probability BETWEEN 0 AND 1),
    model_version   TEXT,
    state           TEXT NOT NULL DEFAULT 'predicted'
        CHECK (state IN ('predicted', 'confirmed', 'expired')),
    confirmed_by    BIGINT REFERENCES anomaly_detections (id) ON DELETE SET NULL,
    settled_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((state = 'predicted') = (settled_at IS NULL))
);
-- At most one open prediction per machine: a forecast that keeps saying so is the same one.
CREATE UNIQUE INDEX predicted_anomalies_open ON predicted_anomalies (machine_id)
    WHERE state = 'predicted';
CREATE INDEX predicted_anomalies_ts ON predicted_anomalies (predicted_at DESC);
