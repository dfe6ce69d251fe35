-- The emit trigger reads the column; give it back the transaction's setting first, as
-- triggers/400_engagement.sql had it before 0013.
CREATE OR REPLACE FUNCTION marketing.emit_engagement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    SELECT CASE e.event_type WHEN 'open' THEN 'email_opened' ELSE 'email_clicked' END,
           jsonb_build_object('id', e.id, 'contact_id', e.contact_id,
                              'message_id', e.message_id, 'campaign_id', e.campaign_id,
                              'provider', e.provider, 'occurred_at', e.occurred_at),
           e.id
      FROM new_engagement AS e
     WHERE e.event_type IN ('open', 'click')
     ORDER BY e.id;
    RETURN NULL;
END
$$;

ALTER TABLE marketing.engagement_events DROP COLUMN correlation_id;
