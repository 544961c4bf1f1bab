-- Transactions exactly as accepted, one row per client transaction_id.
CREATE TABLE transactions (
    transaction_id text PRIMARY KEY CHECK (length(transaction_id) BETWEEN 1 AND 128),
    account_id     text NOT NULL,
    amount         numeric(24, 4) NOT NULL CHECK (amount > 0),
    currency       char(3) NOT NULL,
    occurred_at    timestamptz NOT NULL,
    merchant_id    text NOT NULL,
    geo_lat        double precision CHECK (geo_lat BETWEEN -90 AND 90),
    geo_lon        double precision CHECK (geo_lon BETWEEN -180 AND 180),
    country        char(2),
    channel        text,
    metadata       jsonb,
    raw            jsonb NOT NULL,
    received_at    timestamptz NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now()
);
-- The account's history, newest first (drill-downs and features).
CREATE INDEX transactions_account_time ON transactions (account_id, occurred_at DESC);
CREATE INDEX transactions_merchant_time ON transactions (merchant_id, occurred_at DESC);

-- One decision per transaction, with everything needed to explain and reproduce it.
CREATE TABLE scores (
    transaction_id text PRIMARY KEY REFERENCES transactions (transaction_id) ON DELETE CASCADE,
    model_version  text NOT NULL,
    rules_version  text NOT NULL,
    score          double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    risk_label     text NOT NULL CHECK (risk_label IN ('LOW', 'MEDIUM', 'HIGH')),
    reasons        jsonb NOT NULL,
    features       jsonb NOT NULL,
    contributions  jsonb NOT NULL DEFAULT '{}'::jsonb,
    scored_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scores_risk_time ON scores (risk_label, scored_at DESC);

-- At most one alert per transaction; the id is monotonic for `since` cursors.
CREATE TABLE alerts (
    alert_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  text NOT NULL UNIQUE REFERENCES transactions (transaction_id) ON DELETE CASCADE,
    account_id      text NOT NULL,
    risk_label      text NOT NULL CHECK (risk_label IN ('LOW', 'MEDIUM', 'HIGH')),
    score           double precision NOT NULL,
    reason          text NOT NULL,
    threshold       double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text
);
CREATE INDEX alerts_created ON alerts (created_at DESC);
CREATE INDEX alerts_account_created ON alerts (account_id, created_at DESC);
CREATE INDEX alerts_open ON alerts (alert_id) WHERE acknowledged_at IS NULL;
