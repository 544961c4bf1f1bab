-- Which worker node made the decision (for operations and to audit shard ownership).
ALTER TABLE scores ADD COLUMN processed_by text;
