-- Undoes 0010.delivery-tracking.sql: the delivery state, the kept metadata and the timeline's
-- source keys go, with what they held (delivery_log and responses rows stay).
DROP INDEX IF EXISTS marketing.contact_enrichment_linkedin_idx;
DROP INDEX IF EXISTS marketing.contact_enrichment_email_lower_idx;
ALTER TABLE marketing.contact_timeline
    DROP CONSTRAINT IF EXISTS contact_timeline_source_name_check,
    DROP CONSTRAINT IF EXISTS contact_timeline_source_check,
    DROP CONSTRAINT IF EXISTS contact_timeline_source_key,
    DROP COLUMN IF EXISTS source_id,
    DROP COLUMN IF EXISTS source;
ALTER TABLE marketing.responses DROP COLUMN IF EXISTS metadata;
ALTER TABLE marketing.delivery_log DROP COLUMN IF EXISTS metadata;
ALTER TABLE marketing.message_queue
    DROP CONSTRAINT IF EXISTS message_queue_delivery_status_at_check,
    DROP CONSTRAINT IF EXISTS message_queue_delivery_status_check,
    DROP COLUMN IF EXISTS delivery_status_at,
    DROP COLUMN IF EXISTS delivery_status;
DROP FUNCTION IF EXISTS marketing.delivery_rank(text);
