-- 0009: each edge's store-and-forward depth as it last reported it (with every batch it
-- sends), for the dashboard's pipeline health.
ALTER TABLE edges ADD COLUMN backlog BIGINT;
ALTER TABLE edges ADD COLUMN backlog_reported_at TIMESTAMPTZ;
