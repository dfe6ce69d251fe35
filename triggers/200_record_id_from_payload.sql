-- Fires: BEFORE INSERT on marketing.pipeline_events, only for a row that arrives without a
-- record_id but whose payload names one (seed 003's manual trigger, a webhook's insert).
-- Emits: nothing; sets record_id from payload ->> 'record_id' when that is a whole number, so
-- dead letters and error rows name the record. Events from emit_event() carry record_id
-- already, so the WHEN keeps their bulk inserts from calling any function.
CREATE OR REPLACE FUNCTION marketing.record_id_from_payload() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ->> 'record_id' ~ '^[0-9]{1,18}$' THEN
        NEW.record_id := (NEW.payload ->> 'record_id')::bigint;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER _200_record_id_from_payload
    BEFORE INSERT ON marketing.pipeline_events
    FOR EACH ROW WHEN (NEW.record_id IS NULL AND NEW.payload ? 'record_id')
    EXECUTE FUNCTION marketing.record_id_from_payload();
