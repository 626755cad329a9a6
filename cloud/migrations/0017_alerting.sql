-- 0017: alerting (cloud/alerting/). Rules say what raises an alert; channels where it goes;
-- silences mute matching alerts until they expire. One fault is one alert row (its group
-- key: rule + machine + sensor or edge), updated while it persists and resolved once; every
-- notification of it to a channel is a row with its delivery result (status, attempts, error).
CREATE TABLE alert_channels (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('webhook', 'slack', 'email', 'alertmanager')),
    config      JSONB NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT
);

CREATE TABLE alert_rules (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('anomaly', 'persistence', 'predicted', 'rul',
                                              'edge_offline', 'edge_backlog', 'buffer_drops')),
    machine_id  TEXT,
    sensor      TEXT,
    params      JSONB NOT NULL DEFAULT '{}'::jsonb,
    severity    TEXT NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    -- Empty: every enabled channel.
    channel_ids BIGINT[] NOT NULL DEFAULT '{}',
    enabled     BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT
);

CREATE TABLE alert_silences (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL matches anything.
    rule_id     BIGINT REFERENCES alert_rules (id) ON DELETE CASCADE,
    machine_id  TEXT,
    sensor      TEXT,
    starts_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    ends_at     TIMESTAMPTZ NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT alert_silences_order CHECK (starts_at < ends_at)
);

CREATE TABLE alerts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_key      TEXT NOT NULL,
    rule_id        BIGINT REFERENCES alert_rules (id) ON DELETE SET NULL,
    rule_name      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    machine_id     TEXT,
    sensor         TEXT,
    edge_id        TEXT,
    severity       TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'firing' CHECK (status IN ('firing', 'resolved')),
    summary        TEXT NOT NULL,
    occurrences    BIGINT NOT NULL DEFAULT 1,
    first_anomaly_id BIGINT,
    last_anomaly_id  BIGINT,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When an 'update' notification was last sent (updates are rate-limited per alert).
    notified_at    TIMESTAMPTZ,
    resolved_at    TIMESTAMPTZ
);
-- At most one firing alert per fault.
CREATE UNIQUE INDEX alerts_one_firing ON alerts (group_key) WHERE status = 'firing';
CREATE INDEX alerts_by_time ON alerts (started_at DESC);

CREATE TABLE alert_notifications (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel_id      BIGINT REFERENCES alert_channels (id) ON DELETE SET NULL,
    channel_name    TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('firing', 'update', 'resolved')),
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'silenced')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    silence_id      BIGINT REFERENCES alert_silences (id) ON DELETE SET NULL
);
CREATE INDEX alert_notifications_due ON alert_notifications (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX alert_notifications_by_alert ON alert_notifications (alert_id);

