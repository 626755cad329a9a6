-- 0016: the operator's workflow on anomalies: open -> acknowledged -> resolved, each step with
-- who, when and a note (audit fields kept on the row: an anomaly is acknowledged once and
-- resolved once; the assistant reads resolution_note for similar anomalies), and a severity
-- for filtering and alert rules. The severity is set by a trigger, whichever path stored the anomaly (aggregator, ingest API, replayed dead letters):
-- a threshold detection crossed a critical limit ('critical'); a model's verdict is 'critical'
-- from score 2 (twice its decision threshold), 'warning' below.
ALTER TABLE anomaly_detections
    ADD COLUMN severity TEXT NOT NULL DEFAULT 'warning'
        CHECK (severity IN ('info', 'warning', 'critical')),
    ADD COLUMN state TEXT NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'acknowledged', 'resolved')),
    ADD COLUMN acknowledged_by TEXT,
    ADD COLUMN acknowledged_at TIMESTAMPTZ,
    ADD COLUMN ack_note TEXT,
    ADD COLUMN resolved_by TEXT,
    ADD COLUMN resolved_at TIMESTAMPTZ,
    ADD COLUMN resolution_note TEXT,
    ADD CONSTRAINT anomaly_workflow_audit CHECK (
        (state = 'open' AND acknowledged_at IS NULL AND resolved_at IS NULL)
        OR (state = 'acknowledged' AND acknowledged_at IS NOT NULL AND resolved_at IS NULL)
        OR (state = 'resolved' AND resolved_at IS NOT NULL)
    );

CREATE FUNCTION anomaly_severity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.severity := CASE
        WHEN NEW.detection_method = 'thresholds' THEN 'critical'
        WHEN NEW.anomaly_score >= 2.0 THEN 'critical'
        ELSE 'warning'
    END;
    RETURN NEW;
END $$;
CREATE TRIGGER anomaly_detections_severity BEFORE INSERT ON anomaly_detections
    FOR EACH ROW EXECUTE FUNCTION anomaly_severity();

-- The fleet feed filters by state and severity, newest first.
CREATE INDEX anomaly_detections_state_ts ON anomaly_detections (state, reading_ts DESC);
-- Alert rules look at what arrived lately (cloud/alerting/rules.py).
CREATE INDEX anomaly_detections_created ON anomaly_detections (created_at);
