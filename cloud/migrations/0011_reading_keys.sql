-- 0011: the key of a reading is (edge_id, seq), whatever its timestamp.
--
-- sensor_readings is partitioned by day, so its own unique key has to contain "timestamp":
-- a message reusing a stored (edge_id, seq) with another timestamp would become a second
-- row. reading_keys is the one unpartitioned arbiter: the storing statement inserts the key
-- (ON CONFLICT DO NOTHING) and only the readings whose key is new reach sensor_readings.
-- A message whose key is taken is compared with the stored row (found through ``ts``, which
-- names its partition): an identical redelivery is a silent duplicate, other content a
-- conflict (a dead letter naming both versions).
CREATE TABLE reading_keys (
    edge_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    ts      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (edge_id, seq)
);

INSERT INTO reading_keys (edge_id, seq, ts)
SELECT edge_id, seq, "timestamp" FROM sensor_readings
ON CONFLICT (edge_id, seq) DO NOTHING;

-- Keys arrive roughly in time order: a BRIN index lets retention prune them by range, next to
-- the partitions it drops, for a few kilobytes.
CREATE INDEX reading_keys_ts_brin ON reading_keys USING BRIN (ts);

-- A dead letter is written in the transaction of its batch; a crash before the offset commit
-- redelivers the batch, and the position key keeps it one letter. ``detail`` holds what a
-- reason cannot: both versions of a key conflict.
ALTER TABLE dead_letters ADD COLUMN detail JSONB;
DELETE FROM dead_letters d USING dead_letters e
WHERE d.source = 'kafka' AND e.source = 'kafka' AND d.topic = e.topic
  AND d.kafka_partition = e.kafka_partition AND d.kafka_offset = e.kafka_offset AND d.id > e.id;
CREATE UNIQUE INDEX dead_letters_kafka_position ON dead_letters (topic, kafka_partition, kafka_offset)
    WHERE source = 'kafka';
CREATE INDEX dead_letters_received ON dead_letters USING BRIN (received_at);

-- Idempotent ingest for integrators (header Idempotency-Key): what the first request was
-- assigned (per reading: seq and timestamp), so a retry of the same body carries the same
-- keys and stores nothing new. Kept 24 hours (cloud/db/partitions.py prunes).
CREATE TABLE ingest_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    body_sha256 BYTEA NOT NULL,
    assigned    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX ingest_idempotency_created ON ingest_idempotency USING BRIN (created_at);
