-- 0005: the auth baseline. Users with roles (admin, operator, viewer) and argon2 password
-- hashes; server-side sessions (only a SHA-256 of the token is stored, so a leaked table
-- does not log anyone in); per-edge ingest API keys, stored as SHA-256 of a 256-bit random
-- key (high-entropy keys need no slow hash, and ingest checks one on every request).

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- NULL: every machine; otherwise the machines this user may see and act on.
    machines      TEXT[],
    disabled      BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE user_sessions (
    token_hash  BYTEA PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);

CREATE TABLE edge_api_keys (
    key_id      TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT,
    last_used   TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX edge_api_keys_edge ON edge_api_keys (edge_id);
