-- 0014: dead letters that can be replayed (``rig-cloud dead-letters list|replay``,
-- cloud/dead_letters.py).
--
-- A dead letter now keeps what replaying needs: the Kafka key (the machine id the producer
-- partitioned by) and the whole payload (before, payloads were cut at 64 KiB; Kafka's own
-- message limit bounds them now). ``payload_bytes`` is the length of the message as it was
-- received: equal to length(payload) for every letter written from now on, NULL for a letter
-- of before whose payload may have been cut (exactly 64 KiB kept), which cannot be replayed.
--
-- Replay re-validates a letter with the rules in force then: one that is valid now is stored
-- (once: the key (edge_id, seq) decides, as for any delivery) and marked ``replayed`` with
-- the key it was stored under; one that is still invalid stays ``open`` with its new reason
-- in ``reason`` (``first_reason`` keeps why it was set aside in the first place; NULL:
-- the same as ``reason``).
ALTER TABLE dead_letters
    ADD COLUMN kafka_key BYTEA,
    ADD COLUMN payload_bytes INTEGER,
    ADD COLUMN first_reason TEXT,
    ADD COLUMN status TEXT NOT NULL DEFAULT 'open',
    ADD COLUMN replays INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_replay_at TIMESTAMPTZ,
    ADD COLUMN stored_edge_id TEXT,
    ADD COLUMN stored_seq BIGINT,
    ADD CONSTRAINT dead_letters_status CHECK (status IN ('open', 'replayed'));

UPDATE dead_letters SET
    first_reason = reason,
    payload_bytes = CASE WHEN length(payload) < 65536 THEN length(payload) END;

-- Replay and the list walk the open letters by id.
CREATE INDEX dead_letters_open ON dead_letters (id) WHERE status = 'open';
