-- The audit trail: every analyst and admin action, who (the token's subject and roles),
-- what (action and subject), when, and the state before and after. Written in the same
-- transaction as the change it records, so there is no change without its entry.
CREATE TABLE audit_log (
    audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    roles    text[] NOT NULL DEFAULT '{}',
    action   text NOT NULL,
    subject  text NOT NULL,
    before   jsonb,
    after    jsonb,
    trace_id text
);
CREATE INDEX audit_log_actor ON audit_log (actor, audit_id);
CREATE INDEX audit_log_action ON audit_log (action, audit_id);
CREATE INDEX audit_log_subject ON audit_log (subject, audit_id);

-- Earlier rule-set and model changes carry over; the old table goes.
INSERT INTO audit_log (at, actor, action, subject, after)
SELECT at, actor,
       CASE WHEN action IN ('create', 'create+activate', 'activate') AND subject LIKE 'rules-%'
            THEN 'rules.' || replace(action, 'create+activate', 'create')
            ELSE 'model.' || CASE action WHEN 'active' THEN 'activate' WHEN 'shadow' THEN 'shadow'
                                         WHEN 'retired' THEN 'retire' ELSE action END
       END,
       subject,
       jsonb_build_object('migrated_from', 'model_events', 'action', action)
FROM model_events ORDER BY event_id;
DROP TABLE model_events;

-- Append-only: the database itself refuses to rewrite history.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
