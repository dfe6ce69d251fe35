-- Fires: once per INSERT statement on marketing.pipeline_events (any writer: triggers, the
-- web app, a manual INSERT from psql). Emits: NOTIFY cascade_events with an empty payload, a
-- wake-up only; listeners always claim from the table.
-- Why the condition: a notifying commit takes a cluster-wide lock that serialises commits, so
-- writers notify only while some listener is asleep (marketing.listeners.sleeping). A
-- listener that is awake claims again by itself. The shared advisory lock closes the race
-- with a listener falling asleep: before it trusts the flag it takes the same lock exclusively,
-- which waits out every writer that might have read the flag too early. See
-- docs/architecture.md, "Waking the listener".
CREATE OR REPLACE FUNCTION marketing.wake_listeners() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- 1667331939 is 'casc' in ASCII; (…, 1) is the wake-up barrier.
    PERFORM pg_advisory_xact_lock_shared(1667331939, 1);
    -- Under REPEATABLE READ or SERIALIZABLE the flag would be read from the transaction's
    -- snapshot, which may predate a listener falling asleep: such writers always notify.
    IF current_setting('transaction_isolation') <> 'read committed'
       OR EXISTS (SELECT 1 FROM marketing.listeners WHERE sleeping) THEN
        PERFORM pg_notify('cascade_events', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER _900_wake_listeners
    AFTER INSERT ON marketing.pipeline_events
    FOR EACH STATEMENT EXECUTE FUNCTION marketing.wake_listeners();
