-- vw_alerts' error rate (0007) reads marketing.pipeline_events through its primary key
-- instead of scanning it. Its window is on created_at, and no index on created_at exists (a
-- BRIN one cost the queue 25 %, measured); but ids grow with time, so
-- marketing.first_event_id_at (0011) finds where the window starts by bisecting the key, and
-- the read starts there, an hour earlier (a long transaction's rows carry its start time but
-- later ids). Windows on processed_at or finished_at (slow_processing, and
-- vw_pipeline_health's processed, dead and latency figures) keep 0007's full read: an event
-- can finish any time after it was created (a backlog drained after an outage, a dead letter
-- replayed days later keeps its created_at), and those are the slowest events, the ones the
-- figures exist to show; ids say nothing about when an event finished. vw_pipeline_health
-- stays as 0007 made it. The column list is unchanged, so CREATE OR REPLACE keeps every
-- dependant (vw_pipeline_health reads vw_alerts).
-- depends: 0011.dashboard-views

CREATE OR REPLACE VIEW marketing.vw_alerts AS
WITH threshold AS (
    SELECT guardrail_key, limit_value, period, coalesce(min_sample, 0) AS min_sample,
           now() - period AS window_start
      FROM marketing.shq_guardrails
     WHERE kind = 'alert_threshold'
),
-- Stuck means due (run_after passed) and unclaimed for longer than the window: an event a
-- handler deferred on purpose (retry_after) is not stuck until its time has come. A retry
-- that is due ('failed') waits for the same listeners as a new event, so it counts too.
stalled AS (
    SELECT t.limit_value, t.period,
           count(e.id)::numeric AS observed,
           min(e.run_after) AS since
      FROM threshold AS t
      LEFT JOIN marketing.pipeline_events AS e
        ON e.status IN ('pending', 'failed') AND e.run_after < t.window_start
     WHERE t.guardrail_key = 'alert_pipeline_stalled'
     GROUP BY t.limit_value, t.period
),
-- Per event type: the events that had a chance to fail in the window (created in it, or
-- erroring in it though older) and those of them that logged an error. Several errors of one
-- event (its retries) count once; an error tied to no event counts as one event of its own.
error_window AS (
    SELECT * FROM threshold WHERE guardrail_key = 'alert_high_error_rate'
),
errored AS (
    SELECT er.event_type, coalesce(er.event_id, -er.id) AS event_key,
           min(er.created_at) AS first_error_at
      FROM marketing.pipeline_errors AS er, error_window AS w
     WHERE er.created_at > w.window_start
     GROUP BY 1, 2
),
attempted AS (
    SELECT e.event_type, e.id AS event_key
      FROM marketing.pipeline_events AS e, error_window AS w
     WHERE e.created_at > w.window_start
       AND e.id >= (SELECT marketing.first_event_id_at(window_start - interval '1 hour')
                      FROM error_window)
    UNION
    SELECT event_type, event_key FROM errored
),
error_rate AS (
    SELECT a.event_type,
           count(*) AS sample,
           round(100.0 * count(x.event_key) / count(*), 2) AS observed,
           min(x.first_error_at) AS since
      FROM attempted AS a
      LEFT JOIN errored AS x USING (event_type, event_key)
     GROUP BY a.event_type
),
-- Per message with an outcome in the window: bounced unless it was delivered after all (a
-- soft bounce that a retry delivered is not lost mail).
delivery_outcome AS (
    SELECT dl.message_id,
           bool_or(dl.status = 'bounced') AND NOT bool_or(dl.status = 'delivered') AS bounced,
           min(dl.created_at) FILTER (WHERE dl.status = 'bounced') AS bounced_at
      FROM marketing.delivery_log AS dl, threshold AS t
     WHERE t.guardrail_key = 'alert_deliverability_drop'
       AND dl.created_at > t.window_start
       AND dl.status IN ('delivered', 'bounced')
     GROUP BY dl.message_id
),
deliverability AS (
    SELECT count(*) AS sample,
           round(100.0 * count(*) FILTER (WHERE bounced) / nullif(count(*), 0), 2) AS observed,
           min(bounced_at) AS since
      FROM delivery_outcome
),
-- Syncs are expected when the CRM was asked for something: an attempt in the window, or a
-- sync still pending however old. A quiet period with nothing to sync is not a failure, and
-- a syncer that stopped trying shows up through its pending rows.
crm AS (
    SELECT t.limit_value, t.period,
           count(s.id) FILTER (WHERE s.status = 'success') AS observed,
           count(s.id) AS expected,
           min(s.created_at) FILTER (WHERE s.status <> 'success') AS since
      FROM threshold AS t
      LEFT JOIN marketing.crm_sync_log AS s
        ON s.created_at > t.window_start OR s.status = 'pending'
     WHERE t.guardrail_key = 'alert_crm_sync_failure'
     GROUP BY t.limit_value, t.period
),
latency AS (
    SELECT round(avg(extract(epoch FROM e.processed_at - e.created_at)), 2) AS observed
      FROM marketing.pipeline_events AS e, threshold AS t
     WHERE t.guardrail_key = 'alert_slow_processing'
       AND e.processed_at > t.window_start
),
-- "Email enrichment success": role slots filled of those finished in the window.
enrichment AS (
    SELECT count(*) AS sample,
           round(100.0 * count(*) FILTER (WHERE sl.status = 'filled') / nullif(count(*), 0), 2)
               AS observed
      FROM marketing.company_slots AS sl, threshold AS t
     WHERE t.guardrail_key = 'alert_low_enrichment_rate'
       AND sl.finished_at > t.window_start
       AND sl.status IN ('filled', 'unfilled')
),
-- A delivered message counts as replied to when a reply names it, or, for a reply matched to
-- no message, when its contact replied after the delivery.
replies AS (
    SELECT count(*) AS sample,
           round(100.0 * count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM marketing.responses AS r
                WHERE r.message_id = d.message_id
                   OR (r.message_id IS NULL AND r.contact_id = d.contact_id
                       AND r.received_at >= d.delivered_at)))
               / nullif(count(*), 0), 2) AS observed
      FROM (SELECT dl.message_id, min(dl.contact_id) AS contact_id,
                   min(dl.created_at) AS delivered_at
              FROM marketing.delivery_log AS dl, threshold AS t
             WHERE t.guardrail_key = 'alert_reply_rate_drop'
               AND dl.status = 'delivered'
               AND dl.created_at > t.window_start
             GROUP BY dl.message_id) AS d
)
SELECT 'pipeline_stalled' AS alert, 'critical' AS severity, NULL::text AS scope,
       format('%s events due and unclaimed for more than %s (threshold: more than %s)',
              s.observed, marketing.describe_interval(s.period), s.limit_value) AS condition,
       s.observed, s.limit_value AS threshold,
       'Check the listeners (cascade status), restart them if needed' AS action,
       s.since
  FROM stalled AS s
 WHERE s.observed > s.limit_value
UNION ALL
SELECT 'high_error_rate', 'critical', er.event_type,
       format('%s%% of %s %s events hit an error in the last %s (threshold: more than %s%%)',
              er.observed, er.sample, er.event_type, marketing.describe_interval(w.period),
              w.limit_value),
       er.observed, w.limit_value,
       'Review logs, check API credentials, fix data issues',
       er.since
  FROM error_rate AS er, error_window AS w
 WHERE er.observed > w.limit_value AND er.sample >= w.min_sample
UNION ALL
SELECT 'deliverability_drop', 'critical', NULL,
       format('%s%% of %s messages bounced in the last %s (threshold: more than %s%%)',
              d.observed, d.sample, marketing.describe_interval(t.period), t.limit_value),
       d.observed, t.limit_value,
       'Check SMTP configuration, review email content for spam triggers',
       d.since
  FROM deliverability AS d, threshold AS t
 WHERE t.guardrail_key = 'alert_deliverability_drop'
   AND d.observed > t.limit_value AND d.sample >= t.min_sample
UNION ALL
SELECT 'crm_sync_failure', 'critical', NULL,
       format('%s successful CRM syncs in the last %s while %s were expected '
              '(threshold: fewer than %s)',
              c.observed, marketing.describe_interval(c.period), c.expected, c.limit_value),
       c.observed, c.limit_value,
       'Verify CRM API credentials, check network connectivity',
       c.since
  FROM crm AS c
 WHERE c.expected > 0 AND c.observed < c.limit_value
UNION ALL
SELECT 'slow_processing', 'warning', NULL,
       format('events processed in the last %s took %s s on average '
              '(threshold: more than %s s)',
              marketing.describe_interval(t.period), l.observed, t.limit_value),
       l.observed, t.limit_value,
       'Check database performance, review workflow complexity',
       NULL::timestamptz
  FROM latency AS l, threshold AS t
 WHERE t.guardrail_key = 'alert_slow_processing' AND l.observed > t.limit_value
UNION ALL
SELECT 'low_enrichment_rate', 'warning', NULL,
       format('%s%% of %s role slots finished in the last %s were filled '
              '(threshold: fewer than %s%%)',
              en.observed, en.sample, marketing.describe_interval(t.period), t.limit_value),
       en.observed, t.limit_value,
       'Review Apify quota, check LinkedIn data quality',
       NULL
  FROM enrichment AS en, threshold AS t
 WHERE t.guardrail_key = 'alert_low_enrichment_rate'
   AND en.observed < t.limit_value AND en.sample >= t.min_sample
UNION ALL
SELECT 'reply_rate_drop', 'warning', NULL,
       format('%s%% of %s messages delivered in the last %s were replied to '
              '(threshold: fewer than %s%%)',
              rp.observed, rp.sample, marketing.describe_interval(t.period), t.limit_value),
       rp.observed, t.limit_value,
       'Review message templates, analyze engagement data',
       NULL
  FROM replies AS rp, threshold AS t
 WHERE t.guardrail_key = 'alert_reply_rate_drop'
   AND rp.observed < t.limit_value AND rp.sample >= t.min_sample;
