-- Drops the indexes of 0010.pipeline-events-time-indexes.sql.
DROP INDEX IF EXISTS marketing.pipeline_events_finished_brin;
DROP INDEX IF EXISTS marketing.pipeline_events_created_brin;
