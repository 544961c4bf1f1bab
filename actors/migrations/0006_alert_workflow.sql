-- Analysts resolve alerts (which also labels the transaction); the outbox column lets the
-- alert publisher deliver every alert to Redis and RabbitMQ at least once after commit.
ALTER TABLE alerts
    ADD COLUMN resolved_at  timestamptz,
    ADD COLUMN resolved_by  text,
    ADD COLUMN resolution   text CHECK (resolution IN ('fraud', 'legit')),
    ADD COLUMN published_at timestamptz;
-- Alerts raised before this migration count as delivered (no burst on upgrade).
UPDATE alerts SET published_at = created_at;
CREATE INDEX alerts_unpublished ON alerts (alert_id) WHERE published_at IS NULL;
CREATE INDEX alerts_risk_id ON alerts (risk_label, alert_id);
