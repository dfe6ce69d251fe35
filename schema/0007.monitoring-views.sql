-- Seed 003's monitoring queries as views ("Monitoring Queries" and "Historical Analysis"), the
-- dashboard box as one row (vw_pipeline_health), and the seed's seven "Operational Alerts" as
-- one row per active alert (vw_alerts), with every threshold a row of shq_guardrails so
-- operators tune an alert with an UPDATE, not a migration.
--
-- Seed 003's "Error rate by stage" query is marketing.vw_error_rate_24h (0002): the same
-- query with two more columns, so there is no second view of it here.
--
-- All views read; none locks beyond a plain SELECT. The windows compare against now(), which
-- is the start of the reading transaction.
-- depends: 0006.phases-2-3-tables

-- Alert thresholds are guardrails of a third kind. For them limit_value is the threshold,
-- period the window the alert looks back over, unit what limit_value counts, and min_sample
-- the fewest observations a rate needs before it can alert (one bounce in one send is not a
-- 100 % bounce rate worth waking anyone for). `used` and window_started_at mean nothing here.
ALTER TABLE marketing.shq_guardrails DROP CONSTRAINT shq_guardrails_kind_check;
ALTER TABLE marketing.shq_guardrails ADD CONSTRAINT shq_guardrails_kind_check
    CHECK (kind IN ('rate_limit', 'budget', 'alert_threshold'));
ALTER TABLE marketing.shq_guardrails ADD COLUMN min_sample integer;
ALTER TABLE marketing.shq_guardrails ADD CONSTRAINT shq_guardrails_min_sample_check
    CHECK (min_sample IS NULL OR (kind = 'alert_threshold' AND min_sample >= 0));

-- Deleting one of these rows switches its alert off; vw_alerts only evaluates alerts that
-- have a threshold.
INSERT INTO marketing.shq_guardrails
    (guardrail_key, kind, limit_value, unit, period, min_sample, description)
VALUES
    ('alert_pipeline_stalled', 'alert_threshold', 100, 'events', '5 minutes', NULL,
     'Critical alert "pipeline stalled": more than limit_value events due (pending, or failed '
     'and awaiting retry) and unclaimed for longer than period'),
    ('alert_high_error_rate', 'alert_threshold', 10, 'percent', '1 hour', 10,
     'Critical alert "high error rate": more than limit_value % of one event type''s events '
     'hit an error within period (at least min_sample events)'),
    ('alert_deliverability_drop', 'alert_threshold', 20, 'percent', '24 hours', 20,
     'Critical alert "deliverability drop": more than limit_value % of messages with a '
     'delivery outcome within period bounced (at least min_sample messages)'),
    ('alert_crm_sync_failure', 'alert_threshold', 1, 'successful syncs', '30 minutes', NULL,
     'Critical alert "CRM sync failure": fewer than limit_value successful syncs within period '
     'while syncs are expected (a sync attempted within period, or one pending)'),
    ('alert_slow_processing', 'alert_threshold', 10, 'seconds', '1 hour', NULL,
     'Warning alert "slow processing": events processed within period took more than '
     'limit_value seconds on average from creation'),
    ('alert_low_enrichment_rate', 'alert_threshold', 70, 'percent', '24 hours', 10,
     'Warning alert "low enrichment rate": fewer than limit_value % of role slots finished '
     'within period were filled (at least min_sample slots)'),
    ('alert_reply_rate_drop', 'alert_threshold', 3, 'percent', '7 days', 20,
     'Warning alert "reply rate drop": fewer than limit_value % of messages delivered within '
     'period were replied to (at least min_sample messages)');

-- '00:05:00' is how PostgreSQL prints five minutes; alert conditions should read "5 minutes".
CREATE FUNCTION marketing.describe_interval(span interval) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
               WHEN s % 86400 = 0 AND s > 0 THEN (s / 86400) || ' day'
               WHEN s % 3600 = 0 AND s > 0 THEN (s / 3600) || ' hour'
               WHEN s % 60 = 0 AND s > 0 THEN (s / 60) || ' minute'
               ELSE s || ' second'
           END || CASE WHEN s IN (1, 60, 3600, 86400) THEN '' ELSE 's' END
      FROM (SELECT extract(epoch FROM span)::bigint AS s) AS seconds
$$;

-- "Pending events (should be low)".
CREATE VIEW marketing.vw_pending_by_type AS
SELECT event_type,
       count(*) AS pending_count,
       count(*) FILTER (WHERE run_after <= now()) AS due_count,
       min(created_at) AS oldest_created_at
  FROM marketing.pipeline_events
 WHERE status = 'pending'
 GROUP BY event_type
 ORDER BY pending_count DESC;

-- "Event processing latency", over everything still in the table (processed events are
-- purged after 30 days by seed 003's maintenance).
CREATE VIEW marketing.vw_event_latency AS
SELECT event_type,
       round(avg(extract(epoch FROM processed_at - created_at)), 3) AS avg_latency_sec,
       count(*) AS total_events
  FROM marketing.pipeline_events
 WHERE processed_at IS NOT NULL
 GROUP BY event_type;

-- "Processing latency by stage", events created in the last hour.
CREATE VIEW marketing.vw_latency_by_stage AS
SELECT event_type,
       round(avg(extract(epoch FROM processed_at - created_at)), 3) AS avg_seconds,
       round(max(extract(epoch FROM processed_at - created_at)), 3) AS max_seconds,
       count(*) AS processed_count
  FROM marketing.pipeline_events
 WHERE processed_at IS NOT NULL
   AND created_at > now() - interval '1 hour'
 GROUP BY event_type
 ORDER BY avg_seconds DESC;

-- "Recent errors": the twenty newest unresolved.
CREATE VIEW marketing.vw_recent_errors AS
SELECT id, event_id, event_type, record_id, error_message, severity, created_at
  FROM marketing.pipeline_errors
 WHERE NOT resolved
 ORDER BY created_at DESC
 LIMIT 20;

-- "Campaign overview (Phase 2)": campaigns of the last 7 days with their funnel. Unlike the
-- seed's query, delivery, opens and replies count only when they belong to this campaign:
-- the seed joins them by contact alone, so a contact in two campaigns counted in both, and
-- the four-way join multiplied rows. Each contact counts once per step.
CREATE VIEW marketing.vw_campaign_overview AS
SELECT c.id AS campaign_id,
       c.campaign_name,
       c.status,
       c.created_at,
       count(cc.contact_id) AS total_contacts,
       count(*) FILTER (WHERE funnel.delivered) AS delivered,
       count(*) FILTER (WHERE funnel.opened) AS opened,
       count(*) FILTER (WHERE funnel.replied) AS replied
  FROM marketing.campaigns AS c
  LEFT JOIN marketing.campaign_contacts AS cc ON cc.campaign_id = c.id
  LEFT JOIN LATERAL (
      SELECT EXISTS (SELECT 1 FROM marketing.delivery_log AS dl
                      WHERE dl.contact_id = cc.contact_id AND dl.campaign_id = c.id
                        AND dl.status = 'delivered') AS delivered,
             EXISTS (SELECT 1 FROM marketing.engagement_events AS ee
                      WHERE ee.contact_id = cc.contact_id AND ee.campaign_id = c.id
                        AND ee.event_type = 'open') AS opened,
             EXISTS (SELECT 1 FROM marketing.responses AS r
                      WHERE r.contact_id = cc.contact_id AND r.campaign_id = c.id) AS replied
  ) AS funnel ON true
 WHERE c.created_at > now() - interval '7 days'
 GROUP BY c.id
 ORDER BY c.created_at DESC;

-- Seed 003's operational alerts, one row per alert that is firing now (per stage, for the
-- error rate: `scope` names the stage). observed and threshold are in the threshold row's
-- unit; `since` is when the evidence began where that can be told (the oldest stuck event,
-- the first error or bounce in the window, the first unsuccessful sync), else NULL.
CREATE VIEW marketing.vw_alerts AS
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

-- Seed 003's dashboard box, one row. "Last 5 minutes" counts events processed in it; the
-- 24-hour figures count events created (total) or finished (success rate, latency) in the
-- last day; success is processed out of finished, so an event that failed, retried and then
-- succeeded is a success. The queue-state counts read the partial indexes of 0001.
CREATE VIEW marketing.vw_pipeline_health AS
SELECT now() AS measured_at,
       recent.processed_last_5m,
       recent.events_24h,
       recent.processed_24h,
       recent.dead_24h,
       round(100.0 * recent.processed_24h
             / nullif(recent.processed_24h + recent.dead_24h, 0), 1) AS success_rate_24h,
       recent.avg_latency_seconds_24h,
       (SELECT count(*) FROM marketing.pipeline_errors WHERE NOT resolved) AS unresolved_errors,
       queue.pending,
       queue.retrying,
       queue.processing,
       (SELECT count(*) FROM marketing.pipeline_events WHERE status = 'dead') AS dead_letters,
       round(extract(epoch FROM now() - queue.oldest_pending_at), 1)
           AS oldest_pending_age_seconds,
       alerts.critical_alerts,
       alerts.warning_alerts
  FROM (SELECT count(*) FILTER (WHERE status = 'processed'
                                  AND processed_at > now() - interval '5 minutes')
                   AS processed_last_5m,
               count(*) FILTER (WHERE created_at > now() - interval '24 hours') AS events_24h,
               count(*) FILTER (WHERE status = 'processed'
                                  AND processed_at > now() - interval '24 hours')
                   AS processed_24h,
               count(*) FILTER (WHERE status = 'dead'
                                  AND finished_at > now() - interval '24 hours') AS dead_24h,
               round(avg(extract(epoch FROM processed_at - created_at))
                     FILTER (WHERE processed_at > now() - interval '24 hours'), 2)
                   AS avg_latency_seconds_24h
          FROM marketing.pipeline_events
         WHERE created_at > now() - interval '24 hours'
            OR finished_at > now() - interval '24 hours') AS recent,
       (SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'failed') AS retrying,
               count(*) FILTER (WHERE status = 'processing') AS processing,
               min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending_at
          FROM marketing.pipeline_events
         WHERE status IN ('pending', 'failed', 'processing')) AS queue,
       (SELECT count(*) FILTER (WHERE severity = 'critical') AS critical_alerts,
               count(*) FILTER (WHERE severity = 'warning') AS warning_alerts
          FROM marketing.vw_alerts) AS alerts;
