-- Fires: AFTER INSERT OR UPDATE row triggers on the pipeline's tables, one per stage, each with
-- its own WHEN (...) condition (written IS DISTINCT FROM, so a no-op update emits nothing).
-- Emits: one marketing.pipeline_events row of type TG_ARGV[0] in the same transaction as the
-- write, carrying the new row as payload and its id as record_id. Lineage (parent, run,
-- correlation) comes from the column defaults, which read the listener's transaction context.
CREATE OR REPLACE FUNCTION marketing.emit_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_row jsonb := to_jsonb(NEW);
BEGIN
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    VALUES (TG_ARGV[0], v_row, (v_row ->> 'id')::bigint);
    RETURN NULL;
END
$$;
