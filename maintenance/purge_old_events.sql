-- Purges processed events older than :keep_days days (default 30, seed 003's retention).
-- Dead, failed and pending events are kept whatever their age: they still need someone.
-- Safe to run twice: the second run finds nothing to delete.
-- Run: ./cascadew psql -f maintenance/purge_old_events.sql [-v keep_days=30]
\if :{?keep_days}
\else
\set keep_days 30
\endif
DELETE FROM marketing.pipeline_events
 WHERE status = 'processed'
   AND processed_at < now() - make_interval(days => :keep_days);
