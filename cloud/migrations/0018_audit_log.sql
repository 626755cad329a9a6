-- 0018: the audit trail (cloud/audit/, docs/audit.md). Append-only: one hash chain per
-- category (auth: logins and logouts; change: every state change; export: exports; audit: the
-- trail's own maintenance). Each row holds its canonical content (`body`, JSON text), the
-- SHA-256 of it chained with the previous row's hash (`hash`, `prev_hash`); the filter
-- columns repeat fields of `body` and verification checks that they agree.
-- Partitioned by category, then by month, so retention drops whole months of one category.
CREATE TABLE audit_log (
    category   TEXT NOT NULL CHECK (category IN ('auth', 'change', 'export', 'audit')),
    seq        BIGINT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    ip         TEXT,
    body       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (category, seq, at)
) PARTITION BY LIST (category);

CREATE TABLE audit_log_auth PARTITION OF audit_log FOR VALUES IN ('auth') PARTITION BY RANGE (at);
CREATE TABLE audit_log_change PARTITION OF audit_log FOR VALUES IN ('change') PARTITION BY RANGE (at);
CREATE TABLE audit_log_export PARTITION OF audit_log FOR VALUES IN ('export') PARTITION BY RANGE (at);
CREATE TABLE audit_log_audit PARTITION OF audit_log FOR VALUES IN ('audit') PARTITION BY RANGE (at);
-- Rows outside every month partition (a clock far off) land here rather than failing the
-- action they record.
CREATE TABLE audit_log_auth_default PARTITION OF audit_log_auth DEFAULT;
CREATE TABLE audit_log_change_default PARTITION OF audit_log_change DEFAULT;
CREATE TABLE audit_log_export_default PARTITION OF audit_log_export DEFAULT;
CREATE TABLE audit_log_audit_default PARTITION OF audit_log_audit DEFAULT;

CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_actor ON audit_log (actor, at DESC);
CREATE INDEX audit_log_action ON audit_log (action, at DESC);

-- The last row of each chain. An append locks its category's row (SELECT ... FOR UPDATE)
-- until its transaction ends, so each chain is linear under concurrency.
CREATE TABLE audit_chain_head (
    category  TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    -- Where the chain starts after retention dropped its oldest months (0: the beginning).
    base_seq  BIGINT NOT NULL DEFAULT 0,
    base_hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (category, seq, hash, base_hash)
SELECT c, 0, repeat('0', 64), repeat('0', 64)
FROM unnest(ARRAY['auth', 'change', 'export', 'audit']) AS c;

-- Signed statements of the chain heads (Ed25519, key outside the database).
CREATE TABLE audit_checkpoints (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    statement  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL
);

-- No row of the trail is ever changed or deleted: not by the API's role, not by the owner.
-- Only a role that is a direct member of rig_audit_maintenance may (superusers are not
-- exempt: they have to disable the trigger, which verification then shows). Retention drops
-- whole partitions, which fires no row trigger.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_auth_members m
        JOIN pg_roles r ON r.oid = m.roleid
        JOIN pg_roles u ON u.oid = m.member
        WHERE r.rolname = 'rig_audit_maintenance' AND u.rolname = current_user
    ) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused for role %', TG_OP, current_user
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_checkpoints FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rig_audit_maintenance') THEN
        CREATE ROLE rig_audit_maintenance NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    -- A migration role without CREATEROLE: the DBA creates it (docs/audit.md).
    RAISE NOTICE 'rig_audit_maintenance not created: %', SQLERRM;
END
$$;

-- The month partitions of every category from `first` for `months` months (idempotent; a
-- month whose rows already sit in the default partition is left there).
CREATE FUNCTION audit_ensure_partitions(first DATE, months INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    c TEXT;
    m DATE;
    name TEXT;
    created INTEGER := 0;
    occupied BOOLEAN;
BEGIN
    FOREACH c IN ARRAY ARRAY['auth', 'change', 'export', 'audit'] LOOP
        FOR i IN 0 .. months - 1 LOOP
            m := (date_trunc('month', first) + make_interval(months => i))::date;
            name := format('audit_log_%s_%s', c, to_char(m, 'YYYYMM'));
            CONTINUE WHEN to_regclass(name) IS NOT NULL;
            EXECUTE format(
                'SELECT EXISTS (SELECT 1 FROM %I WHERE at >= %L AND at < %L)',
                'audit_log_' || c || '_default', m, m + interval '1 month')
                INTO STRICT occupied;
            CONTINUE WHEN occupied;
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                name, 'audit_log_' || c, m, (m + interval '1 month')::date);
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

SELECT audit_ensure_partitions(current_date, 3);
