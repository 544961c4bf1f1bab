-- Every alert is written unpublished and updated once published, so each leaves a dead row
-- version and a dead entry in the partial index `alerts_unpublished` that the outbox reads
-- on every commit. With the default thresholds (20 % of the table) autovacuum waited until
-- tens of thousands had piled up, and the outbox query grew from 0.1 ms to 12 ms, a third of
-- PostgreSQL's time at 1,000 tx/s (docs/benchmarks.md). Vacuum this table after every
-- thousand updates instead, without cost-based throttling (its pages are few and hot).
ALTER TABLE alerts SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
