-- A message delivered and later bounced counts as bounced, not delivered, in the monitoring
-- views: vw_alerts' deliverability drop and reply rate, vw_campaign_overview's and the
-- dashboard funnel's delivered. delivery_log keeps both moves (the webhook logs each move
-- forward, schema/0010), and 0007 and 0011 counted any 'delivered' row; a bounce now counts
-- when it comes after the delivery in log order. A bounce logged before a delivery stays
-- cancelled by it (a soft bounce that a retry delivered, written by a sender that logs so).
-- The views are restated whole (a view changes only that way); their columns are unchanged.
-- "No bounce after it" is written out in each (NOT EXISTS on delivery_log_message_idx), so the
-- planner can make it an anti-join: an SQL function holding the subquery is not inlined, and
-- made the funnel ~18x slower with 200,000 delivered messages (measured in review).
-- depends: 0013.engagement-correlation

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
-- Per message with an outcome in the window: its last one, in log order. Delivered then
-- bounced is a bounce (the webhook logs only moves forward, so that is what it sees); a soft
-- bounce that a retry delivered, logged by another writer, is not lost mail.
delivery_outcome AS (
    SELECT DISTINCT ON (dl.message_id)
           dl.message_id, dl.status = 'bounced' AS bounced, dl.created_at AS outcome_at
      FROM marketing.delivery_log AS dl, threshold AS t
     WHERE t.guardrail_key = 'alert_deliverability_drop'
       AND dl.created_at > t.window_start
       AND dl.status IN ('delivered', 'bounced')
     ORDER BY dl.message_id, dl.id DESC
),
deliverability AS (
    SELECT count(*) AS sample,
           round(100.0 * count(*) FILTER (WHERE bounced) / nullif(count(*), 0), 2) AS observed,
           min(outcome_at) FILTER (WHERE bounced) AS since
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
               AND NOT EXISTS (SELECT 1 FROM marketing.delivery_log AS later
                                WHERE later.message_id = dl.message_id AND later.id > dl.id
                                  AND later.status = 'bounced')
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

CREATE OR REPLACE VIEW marketing.vw_campaign_overview AS
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
                        AND dl.status = 'delivered'
                        AND NOT EXISTS (SELECT 1 FROM marketing.delivery_log AS later
                                         WHERE later.message_id = dl.message_id
                                           AND later.id > dl.id
                                           AND later.status = 'bounced')) AS delivered,
             EXISTS (SELECT 1 FROM marketing.engagement_events AS ee
                      WHERE ee.contact_id = cc.contact_id AND ee.campaign_id = c.id
                        AND ee.event_type = 'open') AS opened,
             EXISTS (SELECT 1 FROM marketing.responses AS r
                      WHERE r.contact_id = cc.contact_id AND r.campaign_id = c.id) AS replied
  ) AS funnel ON true
 WHERE c.created_at > now() - interval '7 days'
 GROUP BY c.id
 ORDER BY c.created_at DESC;

CREATE OR REPLACE VIEW marketing.vw_dashboard_funnel AS
WITH intake AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'validated') AS validated,
           count(*) FILTER (WHERE status = 'duplicate') AS duplicate,
           count(*) FILTER (WHERE status = 'rejected') AS rejected
      FROM intake.company_raw_intake
), companies AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status = 'promoted') AS promoted
      FROM marketing.company_master
), slots AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status = 'filled') AS filled,
           count(*) FILTER (WHERE status = 'unfilled') AS unfilled,
           count(*) FILTER (WHERE status IN ('open', 'awaiting_provider')) AS searching
      FROM marketing.company_slots
), contacts AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE email IS NOT NULL) AS with_email,
           count(*) FILTER (WHERE status = 'ready') AS ready
      FROM marketing.contact_enrichment
), verdicts AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE verdict = 'deliverable') AS deliverable,
           count(*) FILTER (WHERE verdict = 'undeliverable') AS undeliverable,
           count(*) FILTER (WHERE verdict = 'risky') AS risky,
           count(*) FILTER (WHERE verdict = 'unverifiable') AS unverifiable
      FROM marketing.email_verification
), messages AS (
    SELECT count(*) AS queued,
           count(*) FILTER (WHERE status = 'sent') AS sent
      FROM marketing.message_queue
), delivered AS (
    SELECT count(DISTINCT dl.message_id) AS messages
      FROM marketing.delivery_log AS dl
     WHERE dl.status = 'delivered'
       AND NOT EXISTS (SELECT 1 FROM marketing.delivery_log AS later
                        WHERE later.message_id = dl.message_id AND later.id > dl.id
                          AND later.status = 'bounced')
), engaged AS (
    SELECT count(DISTINCT contact_id) FILTER (WHERE event_type = 'open') AS opened,
           count(DISTINCT contact_id) FILTER (WHERE event_type = 'click') AS clicked
      FROM marketing.engagement_events
), replied AS (
    SELECT count(DISTINCT contact_id) AS contacts FROM marketing.responses
)
SELECT s.position, s.phase, s.stage, s.label, s.unit, s.count, s.out_of, s.built, s.note
  FROM intake AS i, companies AS c, slots AS sl, contacts AS ct, verdicts AS v,
       messages AS m, delivered AS d, engaged AS g, replied AS r,
       LATERAL (VALUES
        (1, 'enrichment', 'intake_rows', 'Companies received', 'intake rows', i.total,
         NULL::bigint, true,
         format('%s waiting for validation', i.pending)),
        (2, 'enrichment', 'validated', 'Valid companies', 'companies', c.total, i.total, true,
         format('%s rejected, %s duplicates of a known domain', i.rejected, i.duplicate)),
        (3, 'enrichment', 'promoted', 'Given a Barton ID', 'companies', c.promoted, c.total,
         true, NULL),
        (4, 'enrichment', 'slots_filled', 'Role slots filled', 'slots', sl.filled, sl.total,
         true, format('%s unfilled, %s still searching', sl.unfilled, sl.searching)),
        (5, 'enrichment', 'contacts_enriched', 'Contacts with an email', 'contacts',
         ct.with_email, ct.total, true, NULL),
        (6, 'enrichment', 'verified', 'Emails deliverable', 'contacts', v.deliverable,
         ct.with_email, true,
         format('%s undeliverable, %s risky, %s unverifiable, %s awaiting a verdict',
                v.undeliverable, v.risky, v.unverifiable, ct.with_email - v.total)),
        (7, 'enrichment', 'ready', 'Ready for messaging', 'contacts', ct.ready, v.deliverable,
         true, NULL),
        (8, 'messaging', 'messages_queued', 'Messages queued', 'messages', m.queued, ct.ready,
         false, 'messaging is not built yet'),
        (9, 'messaging', 'messages_sent', 'Messages sent', 'messages', m.sent, m.queued, false,
         'messaging is not built yet'),
        (10, 'messaging', 'delivered', 'Messages delivered', 'messages', d.messages, m.sent,
         false, 'messaging is not built yet'),
        (11, 'engagement', 'opened', 'Contacts who opened', 'contacts', g.opened, ct.ready,
         false, 'waits for messaging, which is not built yet'),
        (12, 'engagement', 'clicked', 'Contacts who clicked', 'contacts', g.clicked, g.opened,
         false, 'waits for messaging, which is not built yet'),
        (13, 'engagement', 'replied', 'Contacts who replied', 'contacts', r.contacts, ct.ready,
         false, 'waits for messaging, which is not built yet')
       ) AS s(position, phase, stage, label, unit, count, out_of, built, note);
