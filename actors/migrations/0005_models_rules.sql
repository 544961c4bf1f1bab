-- Analyst-editable rule sets, versioned; exactly one is active and workers hot-reload it.
CREATE TABLE rule_sets (
    version      text PRIMARY KEY,
    rules        jsonb NOT NULL,
    active       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    note         text,
    activated_at timestamptz
);
CREATE UNIQUE INDEX rule_sets_one_active ON rule_sets (active) WHERE active;
CREATE SEQUENCE rule_set_number START 2;
INSERT INTO rule_sets (version, rules, active, created_by, note, activated_at)
VALUES ('rules-1', '{}'::jsonb, true, 'migration', 'built-in defaults', now());

-- Model versions: the serialised artifact, how it was trained and how it evaluated.
-- One is active (acted on), at most one is the shadow challenger (scored, stored, not acted on).
CREATE TABLE models (
    version      text PRIMARY KEY,
    artifact     bytea NOT NULL,
    training     jsonb NOT NULL DEFAULT '{}'::jsonb,
    metrics      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'candidate'
                 CHECK (status IN ('candidate', 'active', 'shadow', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
);
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';
CREATE UNIQUE INDEX models_one_shadow ON models (status) WHERE status = 'shadow';

-- Who changed which rule set or model status, and when.
CREATE TABLE model_events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject    text NOT NULL,
    action     text NOT NULL,
    actor      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

-- The model's own view (anomaly, supervised, probability) and the thresholds applied.
ALTER TABLE scores ADD COLUMN model jsonb, ADD COLUMN thresholds jsonb;

-- The challenger's decisions, kept apart so nothing acts on them.
CREATE TABLE shadow_scores (
    transaction_id text NOT NULL REFERENCES transactions (transaction_id) ON DELETE CASCADE,
    model_version  text NOT NULL,
    score          double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    risk_label     text NOT NULL CHECK (risk_label IN ('LOW', 'MEDIUM', 'HIGH')),
    model          jsonb,
    scored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, model_version)
);
