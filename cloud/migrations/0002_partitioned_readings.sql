-- 0002: sensor_readings becomes a table partitioned by day on "timestamp" (PostgreSQL native
-- partitioning). Partitions are created ahead and dropped past retention by
-- cloud/db/partitions.py (run by the aggregators, the API and `rig-cloud maintain`).
-- A unique key on a partitioned table must contain the partition key, so the key becomes
-- (edge_id, seq, "timestamp"): a redelivered reading repeats all three and is still dropped.

ALTER TABLE sensor_readings RENAME TO sensor_readings_v1;
ALTER TABLE sensor_readings_v1 RENAME CONSTRAINT sensor_readings_edge_seq TO sensor_readings_v1_edge_seq;
ALTER TABLE sensor_readings_v1 RENAME CONSTRAINT sensor_readings_pkey TO sensor_readings_v1_pkey;
ALTER INDEX sensor_readings_machine_ts RENAME TO sensor_readings_v1_machine_ts;
ALTER INDEX idx_custom_sensors RENAME TO sensor_readings_v1_custom;
ALTER INDEX sensor_readings_created_brin RENAME TO sensor_readings_v1_created_brin;

CREATE SEQUENCE sensor_readings_row_id_seq AS BIGINT;
SELECT setval('sensor_readings_row_id_seq', coalesce((SELECT max(id) FROM sensor_readings_v1), 0) + 1,
              false);

CREATE TABLE sensor_readings (LIKE sensor_readings_v1 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE ("timestamp");
ALTER TABLE sensor_readings ALTER COLUMN id DROP IDENTITY IF EXISTS;
ALTER TABLE sensor_readings ALTER COLUMN id SET DEFAULT nextval('sensor_readings_row_id_seq');
ALTER SEQUENCE sensor_readings_row_id_seq OWNED BY sensor_readings.id;
ALTER TABLE sensor_readings ADD CONSTRAINT sensor_readings_key PRIMARY KEY (edge_id, seq, "timestamp");
CREATE INDEX sensor_readings_machine_ts ON sensor_readings (machine_id, "timestamp" DESC);
CREATE INDEX idx_custom_sensors ON sensor_readings USING GIN (custom_sensors);
CREATE INDEX sensor_readings_created_brin ON sensor_readings USING BRIN (created_at);

-- Readings whose day has no partition (yet) land here; maintenance moves them into the
-- right partition as soon as it creates it, so inserts never fail on a missing partition.
CREATE TABLE sensor_readings_default PARTITION OF sensor_readings DEFAULT;

INSERT INTO sensor_readings SELECT * FROM sensor_readings_v1;
DROP TABLE sensor_readings_v1;
