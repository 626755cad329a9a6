-- 0001: readings, machines, totals, dead letters (docs/manifest.md §5.1, keyed by (edge_id, seq)).
-- The 50 core sensor columns follow shared/catalog.py CORE_SENSORS order; a test checks it.

CREATE TABLE machines (
    machine_id  TEXT PRIMARY KEY,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE edges (
    edge_id     TEXT PRIMARY KEY,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seq    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sensor_readings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    machine_id  TEXT NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    temperature DOUBLE PRECISION,
    pressure DOUBLE PRECISION,
    humidity DOUBLE PRECISION,
    ambient_temp DOUBLE PRECISION,
    dew_point DOUBLE PRECISION,
    air_quality_index DOUBLE PRECISION,
    co2_level DOUBLE PRECISION,
    particle_count DOUBLE PRECISION,
    noise_level DOUBLE PRECISION,
    light_intensity DOUBLE PRECISION,
    vibration DOUBLE PRECISION,
    rpm DOUBLE PRECISION,
    torque DOUBLE PRECISION,
    shaft_alignment DOUBLE PRECISION,
    bearing_temp DOUBLE PRECISION,
    motor_current DOUBLE PRECISION,
    belt_tension DOUBLE PRECISION,
    gear_wear DOUBLE PRECISION,
    coupling_temp DOUBLE PRECISION,
    lubrication_pressure DOUBLE PRECISION,
    coolant_temp DOUBLE PRECISION,
    exhaust_temp DOUBLE PRECISION,
    oil_temp DOUBLE PRECISION,
    radiator_temp DOUBLE PRECISION,
    thermal_efficiency DOUBLE PRECISION,
    heat_dissipation DOUBLE PRECISION,
    inlet_temp DOUBLE PRECISION,
    outlet_temp DOUBLE PRECISION,
    core_temp DOUBLE PRECISION,
    surface_temp DOUBLE PRECISION,
    voltage DOUBLE PRECISION,
    current DOUBLE PRECISION,
    power_factor DOUBLE PRECISION,
    frequency DOUBLE PRECISION,
    resistance DOUBLE PRECISION,
    capacitance DOUBLE PRECISION,
    inductance DOUBLE PRECISION,
    phase_angle DOUBLE PRECISION,
    harmonic_distortion DOUBLE PRECISION,
    ground_fault DOUBLE PRECISION,
    flow_rate DOUBLE PRECISION,
    fluid_pressure DOUBLE PRECISION,
    viscosity DOUBLE PRECISION,
    density DOUBLE PRECISION,
    reynolds_number DOUBLE PRECISION,
    pipe_pressure_drop DOUBLE PRECISION,
    pump_efficiency DOUBLE PRECISION,
    cavitation_index DOUBLE PRECISION,
    turbulence DOUBLE PRECISION,
    valve_position DOUBLE PRECISION,
    custom_sensors JSONB NOT NULL DEFAULT '{}'::jsonb,
    quality     JSONB,
    detection   JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT sensor_readings_edge_seq UNIQUE (edge_id, seq)
);

CREATE INDEX sensor_readings_machine_ts ON sensor_readings (machine_id, "timestamp" DESC);
CREATE INDEX idx_custom_sensors ON sensor_readings USING GIN (custom_sensors);
-- Rows arrive roughly in created_at order, so a BRIN index makes "last N seconds" cheap.
CREATE INDEX sensor_readings_created_brin ON sensor_readings USING BRIN (created_at);

-- Exact running totals per machine, maintained in the same transaction as the rows, so
-- /api/stats never counts a large table.
CREATE TABLE reading_totals (
    machine_id      TEXT PRIMARY KEY,
    total           BIGINT NOT NULL DEFAULT 0,
    last_timestamp  TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Messages that could not be decoded or validated: kept with the reason, never blocking.
CREATE TABLE dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL,
    topic       TEXT,
    kafka_partition INTEGER,
    kafka_offset BIGINT,
    reason      TEXT NOT NULL,
    payload     BYTEA,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Sequence numbers for readings an integrator posts without its own (edge_id, seq).
CREATE SEQUENCE ingest_seq AS BIGINT;
