-- The dashboard's funnel (GET /api/dashboard/funnel, cascade/web/dashboard.py) as one view, a
-- function that finds where a time window starts in pipeline_events' primary key, and the
-- index the company timeline needs to find duplicate intake rows.
--
-- The funnel counts rows of the stage tables, not events: events are purged after 30 days
-- (maintenance/purge_old_events.sql) while the rows they produced stay. Each count is exact and
-- scans its table (about eight rows a company across the Phase 1 tables); the funnel does not
-- read marketing.pipeline_events. Everything here only reads: no locks beyond a SELECT's.
-- depends: 0010.delivery-tracking

-- One row per stage, in pipeline order. `count` is how many rows reached the stage, in `unit`;
-- `out_of` is what the stage is measured against (NULL for the first); `built` is false for
-- stages whose handlers are not built yet, so the page says so instead of showing a bare 0.
-- (When the messaging stages are built, the migration that builds them replaces this view.)
CREATE VIEW marketing.vw_dashboard_funnel AS
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
    SELECT count(DISTINCT message_id) AS messages
      FROM marketing.delivery_log WHERE status = 'delivered'
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

-- The id where the events created at or after p_at begin, found by bisecting the primary key
-- (about 25 index probes for a million ids): ids are drawn as events are written, so they grow
-- with created_at. Not exactly: created_at is its transaction's start, so an event written
-- late in a long transaction can sit after younger ones; callers ask from a margin earlier
-- than they need. Returns max(id) + 1 when no event is that young, NULL for an empty table.
-- It reads only; this is how the dashboard reads a time window without an index on time
-- (one would cost the queue a write per status change, docs/architecture.md).
CREATE FUNCTION marketing.first_event_id_at(p_at timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_low      bigint;
    v_high     bigint;
    v_middle   bigint;
    v_probe_id bigint;
    v_probe_at timestamptz;
BEGIN
    SELECT min(id), max(id) + 1 INTO v_low, v_high FROM marketing.pipeline_events;
    -- Invariant: every id below v_low is older than p_at; the answer is at most v_high.
    WHILE v_low < v_high LOOP
        v_middle := v_low + (v_high - v_low) / 2;
        SELECT e.id, e.created_at INTO v_probe_id, v_probe_at
          FROM marketing.pipeline_events AS e
         WHERE e.id >= v_middle
         ORDER BY e.id
         LIMIT 1;
        IF v_probe_at < p_at THEN
            v_low := v_probe_id + 1;
        ELSE
            v_high := v_middle;
        END IF;
    END LOOP;
    RETURN v_low;
END
$$;

-- The company timeline finds every intake row that became or duplicated a company. Partial:
-- a row gets company_id only when validation links it, so a COPY into intake adds no entry,
-- and rejected rows never do.
CREATE INDEX company_raw_intake_company_idx
    ON intake.company_raw_intake (company_id) WHERE company_id IS NOT NULL;
