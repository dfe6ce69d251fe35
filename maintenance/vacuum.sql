-- Vacuums and analyses the engine's two busiest tables (seed 003). Run it after a large purge.
-- Safe to run any number of times. VACUUM cannot run in a transaction: run it as psql does by
-- default, one statement at a time.
-- Run: ./cascadew psql -f maintenance/vacuum.sql
VACUUM ANALYZE marketing.pipeline_events;
VACUUM ANALYZE marketing.pipeline_errors;
