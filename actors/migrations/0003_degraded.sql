-- A decision made without the account's windows (feature store unavailable): rules only.
ALTER TABLE scores ADD COLUMN degraded boolean NOT NULL DEFAULT false;
CREATE INDEX scores_degraded ON scores (scored_at) WHERE degraded;
