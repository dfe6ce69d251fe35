-- Purges resolved errors older than :keep_days days (default 90, seed 003's retention).
-- Unresolved errors are never purged.
-- Safe to run twice: the second run finds nothing to delete.
-- Run: ./cascadew psql -f maintenance/purge_resolved_errors.sql [-v keep_days=90]
\if :{?keep_days}
\else
\set keep_days 90
\endif
DELETE FROM marketing.pipeline_errors
 WHERE resolved = TRUE
   AND resolved_at < now() - make_interval(days => :keep_days);
