-- The engine's monitoring views: dead letters, runs with their stages (seed 002's stage
-- tracking), and seed 003's error views.
-- depends: 0001.engine-core

CREATE VIEW marketing.vw_dead_letters AS
SELECT e.id AS event_id,
       e.event_type,
       e.record_id,
       e.payload,
       e.attempts,
       e.last_error,
       e.replay_count,
       coalesce(e.run_id, e.id) AS run_id,
       e.correlation_id,
       e.created_at,
       e.finished_at AS died_at
  FROM marketing.pipeline_events AS e
 WHERE e.status = 'dead';

-- One row per run: a root event and everything its handlers' writes caused.
CREATE VIEW marketing.vw_pipeline_runs AS
SELECT coalesce(e.run_id, e.id) AS run_id,
       (array_agg(e.event_type ORDER BY e.id))[1] AS root_event_type,
       count(*) AS events,
       count(*) FILTER (WHERE e.status = 'processed') AS stages_done,
       array_agg(e.event_type ORDER BY e.id) FILTER (WHERE e.status = 'processed') AS stage_path,
       (array_agg(e.event_type ORDER BY e.id) FILTER (WHERE e.status = 'dead'))[1] AS failed_at_stage,
       CASE
           WHEN bool_or(e.status = 'dead') THEN 'failed'
           WHEN bool_or(e.status IN ('pending', 'processing', 'failed')) THEN 'running'
           WHEN bool_or(e.outcome = 'skipped') THEN 'completed_with_warnings'
           ELSE 'completed'
       END AS status,
       min(e.created_at) AS started_at,
       max(e.finished_at) AS finished_at,
       round((extract(epoch FROM max(e.finished_at) - min(e.created_at)) * 1000)::numeric, 1)
           AS total_duration_ms
  FROM marketing.pipeline_events AS e
 GROUP BY coalesce(e.run_id, e.id);

CREATE VIEW marketing.vw_error_rate_24h AS
SELECT event_type,
       count(*) AS error_count,
       count(*) FILTER (WHERE severity = 'critical') AS critical_count,
       count(*) FILTER (WHERE severity = 'warning') AS warning_count,
       max(created_at) AS last_error_at
  FROM marketing.pipeline_errors
 WHERE created_at > now() - interval '24 hours'
 GROUP BY event_type
 ORDER BY error_count DESC;

CREATE VIEW marketing.vw_unresolved_errors AS
SELECT id, event_id, event_type, record_id, error_message, severity, attempt, created_at
  FROM marketing.pipeline_errors
 WHERE NOT resolved
 ORDER BY created_at DESC;
