-- Marks errors resolved: by default those whose event has since been processed (a retry or a
-- replay succeeded); with -v event_type=T every unresolved error of that type, once you have
-- dealt with its cause. Safe to run twice: resolved errors are not touched again.
-- Run: ./cascadew psql -f maintenance/resolve_errors.sql [-v event_type=T]
\if :{?event_type}
UPDATE marketing.pipeline_errors
   SET resolved = TRUE, resolved_at = now()
 WHERE NOT resolved AND event_type = :'event_type';
\else
UPDATE marketing.pipeline_errors AS err
   SET resolved = TRUE, resolved_at = now()
  FROM marketing.pipeline_events AS e
 WHERE NOT err.resolved AND e.id = err.event_id AND e.status = 'processed';
\endif
