-- 0015: remaining useful life. RUL models share the detectors' signed lifecycle (registry,
-- validation gate, hot-swap, rollback) as a second kind of model per machine: one active model
-- per machine and kind. The edges' estimates arrive in the readings' detection.rul and are
-- kept per machine over time by a trigger, whichever path stored the reading (aggregator,
-- ingest API, replayed dead letters): a redelivered reading is not inserted, so it adds no
-- second estimate. The colour bands of the dashboard's countdown are an admin setting.
ALTER TABLE model_registry ADD COLUMN kind TEXT NOT NULL DEFAULT 'detector'
    CHECK (kind IN ('detector', 'rul'));
ALTER TABLE model_registry DROP CONSTRAINT model_registry_version;
ALTER TABLE model_registry ADD CONSTRAINT model_registry_version
    UNIQUE (machine_id, kind, version);
DROP INDEX model_registry_one_active;
CREATE UNIQUE INDEX model_registry_one_active ON model_registry (machine_id, kind)
    WHERE status = 'active';

CREATE TABLE machine_rul (
    machine_id       TEXT NOT NULL,
    ts               TIMESTAMPTZ NOT NULL,
    edge_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    rul_hours        DOUBLE PRECISION NOT NULL,
    low_hours        DOUBLE PRECISION NOT NULL,
    high_hours       DOUBLE PRECISION NOT NULL,
    max_hours        DOUBLE PRECISION,
    capped           BOOLEAN NOT NULL DEFAULT false,
    critical_sensors JSONB NOT NULL DEFAULT '[]'::jsonb,
    model_version    TEXT,
    PRIMARY KEY (edge_id, seq)
);
CREATE INDEX machine_rul_by_time ON machine_rul (machine_id, ts DESC);

-- Values were checked by shared.message (numbers, 0 <= low <= rul <= high), so the casts hold.
CREATE FUNCTION machine_rul_from_reading() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r JSONB := NEW.detection -> 'rul';
BEGIN
    INSERT INTO machine_rul (machine_id, ts, edge_id, seq, rul_hours, low_hours, high_hours,
                             max_hours, capped, critical_sensors, model_version)
    VALUES (NEW.machine_id, NEW."timestamp", NEW.edge_id, NEW.seq,
            (r ->> 'rul_hours')::double precision,
            (r ->> 'low_hours')::double precision,
            (r ->> 'high_hours')::double precision,
            (r ->> 'max_hours')::double precision,
            coalesce((r ->> 'capped')::boolean, false),
            coalesce(r -> 'critical_sensors', '[]'::jsonb),
            r ->> 'model_version')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER sensor_readings_rul AFTER INSERT ON sensor_readings
    FOR EACH ROW WHEN (jsonb_typeof(NEW.detection -> 'rul') = 'object')
    EXECUTE FUNCTION machine_rul_from_reading();

CREATE TABLE rul_bands (
    singleton    BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    green_hours  DOUBLE PRECISION NOT NULL DEFAULT 168 CHECK (green_hours > 0),
    yellow_hours DOUBLE PRECISION NOT NULL DEFAULT 24 CHECK (yellow_hours > 0),
    updated_by   TEXT,
    updated_at   TIMESTAMPTZ,
    CHECK (green_hours > yellow_hours)
);
INSERT INTO rul_bands DEFAULT VALUES;
