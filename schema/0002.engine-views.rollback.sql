-- Drops the views of 0002.engine-views.sql.
DROP VIEW IF EXISTS marketing.vw_unresolved_errors;
DROP VIEW IF EXISTS marketing.vw_error_rate_24h;
DROP VIEW IF EXISTS marketing.vw_pipeline_runs;
DROP VIEW IF EXISTS marketing.vw_dead_letters;
