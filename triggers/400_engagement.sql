-- Fires: inserts into Phase 3's engagement tables (schema/0006), from the provider webhooks.
-- Emits, in the transaction of the insert, one event per row (statement triggers, so a batch
-- costs one INSERT ... SELECT into the event log and one wake-up):
--   marketing.engagement_events 'open'   -> email_opened
--   marketing.engagement_events 'click'  -> email_clicked
--   marketing.responses (any reply)      -> reply_received
-- Other engagement rows (unsubscribe, complaint, the 'reply' tracking signal) have no stage
-- yet and emit nothing. The payload names the row and what it belongs to, not its content:
-- a reply's body and a provider's raw event stay in their tables (and leave with the contact
-- on erasure) instead of being copied into the event log. Lineage comes from the column
-- defaults (the transaction's context). An engagement event's correlation id comes from its
-- row (schema/0013), whose default is the transaction's setting: the Instantly webhook's
-- group commit records many requests in one statement, each row with its request's id.

CREATE OR REPLACE FUNCTION marketing.emit_engagement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id, correlation_id)
    SELECT CASE e.event_type WHEN 'open' THEN 'email_opened' ELSE 'email_clicked' END,
           jsonb_build_object('id', e.id, 'contact_id', e.contact_id,
                              'message_id', e.message_id, 'campaign_id', e.campaign_id,
                              'provider', e.provider, 'occurred_at', e.occurred_at),
           e.id, e.correlation_id
      FROM new_engagement AS e
     WHERE e.event_type IN ('open', 'click')
     ORDER BY e.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION marketing.emit_reply_received() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    SELECT 'reply_received',
           jsonb_build_object('id', r.id, 'contact_id', r.contact_id,
                              'message_id', r.message_id, 'campaign_id', r.campaign_id,
                              'channel', r.channel, 'provider', r.provider,
                              'received_at', r.received_at),
           r.id
      FROM new_responses AS r
     ORDER BY r.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER _400_engagement_recorded
    AFTER INSERT ON marketing.engagement_events
    REFERENCING NEW TABLE AS new_engagement
    FOR EACH STATEMENT EXECUTE FUNCTION marketing.emit_engagement();

CREATE OR REPLACE TRIGGER _400_reply_received
    AFTER INSERT ON marketing.responses
    REFERENCING NEW TABLE AS new_responses
    FOR EACH STATEMENT EXECUTE FUNCTION marketing.emit_reply_received();
