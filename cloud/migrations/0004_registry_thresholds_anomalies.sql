-- 0004: the custom-sensor registry (filled automatically from ingest), per-sensor thresholds
-- with per-machine overrides, and anomaly detections (docs/manifest.md §5.2, keyed to the reading).

CREATE TABLE custom_sensors (
    name          TEXT PRIMARY KEY,
    first_seen    TIMESTAMPTZ NOT NULL,
    last_seen     TIMESTAMPTZ NOT NULL,
    first_machine TEXT NOT NULL,
    samples       BIGINT NOT NULL,
    min_value     DOUBLE PRECISION NOT NULL,
    max_value     DOUBLE PRECISION NOT NULL,
    sum_value     DOUBLE PRECISION NOT NULL,
    -- Filled when an admin confirms the sensor (or a parsed spec sheet):
    unit          TEXT,
    category      TEXT,
    confirmed     BOOLEAN NOT NULL DEFAULT false
);

-- machine_id NULL: the default for every machine; a row with a machine overrides it.
CREATE TABLE thresholds (
    sensor      TEXT NOT NULL,
    machine_id  TEXT,
    low         DOUBLE PRECISION,
    high        DOUBLE PRECISION,
    warn_low    DOUBLE PRECISION,
    warn_high   DOUBLE PRECISION,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by  TEXT,
    CONSTRAINT thresholds_order CHECK (low IS NULL OR high IS NULL OR low < high)
);
CREATE UNIQUE INDEX thresholds_sensor_machine ON thresholds (sensor, coalesce(machine_id, ''));

CREATE TABLE anomaly_detections (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    edge_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    reading_ts       TIMESTAMPTZ NOT NULL,
    machine_id       TEXT NOT NULL,
    detection_method VARCHAR(32) NOT NULL,
    anomaly_score    DOUBLE PRECISION NOT NULL,
    is_anomaly       BOOLEAN NOT NULL DEFAULT false,
    detected_sensors TEXT[] NOT NULL DEFAULT '{}',
    details          JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT anomaly_detections_key UNIQUE (edge_id, seq, detection_method)
);
CREATE INDEX anomaly_detections_machine_ts ON anomaly_detections (machine_id, reading_ts DESC);
