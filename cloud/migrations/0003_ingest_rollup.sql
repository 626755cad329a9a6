-- 0003: per-second ingest rollups, written in the same transaction as the rows, so
-- /api/stats reads a handful of rows instead of scanning the last seconds of readings.
-- latency_buckets counts readings by end-to-end latency (reading timestamp -> row commit),
-- bucket upper bounds in ms: cloud/ingest_stats.py LATENCY_BOUNDS_MS.
CREATE TABLE ingest_rollup (
    second          TIMESTAMPTZ PRIMARY KEY,
    readings        BIGINT NOT NULL,
    latency_buckets BIGINT[] NOT NULL
);
