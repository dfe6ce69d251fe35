-- Delivery and engagement tracking for the provider webhooks (/webhooks/delivery, /instantly,
-- /heyreach): a message's delivery state that only moves forward, what each report said, and
-- the keys that make the webhooks and the timeline stages idempotent.
--
-- Forward-only: providers redeliver and reorder, so a 'delivered' may arrive after the
-- 'bounced' it preceded. marketing.message_queue.delivery_status holds the furthest state
-- reported, by marketing.delivery_rank(); a webhook moves it with a compare-and-set (the
-- UPDATE matches only while the new rank is higher), so the late report changes nothing.
-- delivery_log then stays the history of the moves, one row each: a report that moved nothing
-- is answered as superseded and not logged, because the monitoring views (0007) count every
-- 'delivered' row, and a late one kept there would cancel a bounce in vw_alerts and count as
-- delivered in vw_campaign_overview.
-- depends: 0009.campaign-runs

-- The order of delivery states. Anything past 'delivered' is final and equal in rank, so the
-- first final report stands: a complaint cannot undo a bounce, nor a bounce a complaint.
-- 'failed' (the provider could not send) is final too: the provider will not try again.
CREATE FUNCTION marketing.delivery_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
               WHEN 'sent' THEN 1
               WHEN 'deferred' THEN 2
               WHEN 'delivered' THEN 3
               WHEN 'bounced' THEN 4
               WHEN 'failed' THEN 4
               WHEN 'complained' THEN 4
               ELSE 0
           END
$$;

ALTER TABLE marketing.message_queue
    ADD COLUMN delivery_status    text,
    ADD COLUMN delivery_status_at timestamptz,
    ADD CONSTRAINT message_queue_delivery_status_check CHECK (delivery_status IN (
        'sent', 'delivered', 'deferred', 'bounced', 'failed', 'complained')),
    ADD CONSTRAINT message_queue_delivery_status_at_check
        CHECK ((delivery_status IS NULL) = (delivery_status_at IS NULL));

-- What the provider sent with a report or a reply beyond the columns (its own ids, the
-- process key, the raw event), kept so nothing it told us is thrown away.
ALTER TABLE marketing.delivery_log
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT delivery_log_metadata_check CHECK (jsonb_typeof(metadata) = 'object');
ALTER TABLE marketing.responses
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT responses_metadata_check CHECK (jsonb_typeof(metadata) = 'object');

-- The timeline stages (handlers/email_opened, email_clicked, reply_received) record each
-- engagement row once: a re-run event finds its row by source. Rows written by hand (a
-- meeting booked) have no source, and NULLs never conflict.
ALTER TABLE marketing.contact_timeline
    ADD COLUMN source    text,
    ADD COLUMN source_id bigint,
    ADD CONSTRAINT contact_timeline_source_key UNIQUE (source, source_id),
    ADD CONSTRAINT contact_timeline_source_check
        CHECK ((source IS NULL) = (source_id IS NULL)),
    ADD CONSTRAINT contact_timeline_source_name_check
        CHECK (source IS NULL OR source IN ('engagement_events', 'responses'));

-- Engagement webhooks name the person, not our ids: Instantly by the lead's email (in any
-- case), HeyReach by the LinkedIn profile URL (in any case, with or without the scheme,
-- `www.` and a trailing slash, which providers write each their own way). Expression
-- indexes, so each lookup is one probe; cascade/web/heyreach.py writes the same expression.
CREATE INDEX contact_enrichment_email_lower_idx
    ON marketing.contact_enrichment (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX contact_enrichment_linkedin_idx
    ON marketing.contact_enrichment
       (regexp_replace(lower(linkedin_url), '^(https?://)?(www\.)?|/+$', '', 'g'))
    WHERE linkedin_url IS NOT NULL;
