-- Ground truth for supervised training: one label per transaction, with where it came from.
CREATE TABLE labels (
    transaction_id text PRIMARY KEY REFERENCES transactions (transaction_id) ON DELETE CASCADE,
    label          text NOT NULL CHECK (label IN ('fraud', 'legit')),
    source         text NOT NULL,
    note           text,
    labeled_at     timestamptz NOT NULL DEFAULT now()
);
-- Training reads labels in arrival order (and merchant risk only counts labels old enough).
CREATE INDEX labels_labeled_at ON labels (labeled_at);
