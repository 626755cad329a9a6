-- 0008: consumer lag per partition, reported every few seconds by the aggregator that owns
-- the partition, so the API (any process) shows lag without a Kafka client of its own.
CREATE TABLE consumer_lag (
    group_id    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    lag         BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    high_water  BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);
