-- 0012: the AI assistant (cloud/assistant/). A parsed spec sheet is a proposal that waits for
-- an admin's review: nothing of it reaches the custom-sensor registry or the thresholds until
-- the admin confirms (what was proposed and what was confirmed are both kept). Root-cause
-- reports are stored per anomaly, each generation a new version.

CREATE TABLE spec_proposals (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    filename     TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    -- 'offline' or 'model'; model names the model that answered; note says why the model's
    -- answer was not used when the offline path answered although a provider is configured.
    path         TEXT NOT NULL CHECK (path IN ('offline', 'model')),
    model        TEXT,
    note         TEXT,
    proposal     JSONB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'confirmed', 'discarded')),
    created_by   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_by   TEXT,
    decided_at   TIMESTAMPTZ,
    confirmed    JSONB
);
CREATE INDEX spec_proposals_created ON spec_proposals (created_at DESC);

-- What a confirmed spec sheet says of a custom sensor beyond the registry's unit and
-- category: its measuring range, accuracy, output signal, and where each value came from.
CREATE TABLE custom_sensor_specs (
    name          TEXT PRIMARY KEY REFERENCES custom_sensors (name) ON DELETE CASCADE,
    min_range     DOUBLE PRECISION,
    max_range     DOUBLE PRECISION,
    accuracy      TEXT,
    output_signal TEXT,
    provenance    JSONB NOT NULL DEFAULT '{}'::jsonb,
    proposal_id   BIGINT REFERENCES spec_proposals (id) ON DELETE SET NULL,
    updated_by    TEXT,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT custom_sensor_specs_range CHECK (
        min_range IS NULL OR max_range IS NULL OR min_range < max_range
    )
);

CREATE TABLE anomaly_reports (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    anomaly_id  BIGINT NOT NULL REFERENCES anomaly_detections (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    path        TEXT NOT NULL CHECK (path IN ('offline', 'model')),
    model       TEXT,
    note        TEXT,
    facts       JSONB NOT NULL,
    report      JSONB NOT NULL,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT anomaly_reports_version UNIQUE (anomaly_id, version)
);
