-- Fires: writes to Phase 1's tables (schema/0003.enrichment.sql). Emits the enrichment
-- cascade's events, each in the transaction of the write that caused it:
--   intake.company_raw_intake INSERT            -> company_created   (per row, one statement)
--   marketing.company_master INSERT              -> company_validated
--   marketing.company_master barton_id set       -> company_promoted
--   marketing.company_slots INSERT / re-opened   -> slots_created     (per company, now)
--   marketing.company_slots awaiting a provider  -> slots_created     (per company, at the deadline)
--   marketing.contact_enrichment email set       -> contact_enriched
--   marketing.email_verification deliverable     -> email_verified
-- Intake and slots use statement triggers with transition tables: a COPY of 10,000 companies
-- then costs one INSERT ... SELECT into the event log (and one wake-up), not 10,000.

-- A Barton ID reads 04.04.01.BB.NNNNN.CCC: 04 the outreach domain (as seed 000's process
-- keys), 04 the entity (company), 01 the scheme version, then the company's serial from
-- marketing.barton_company_seq split into a block BB and a number NNNNN, and CCC an ISO 7064
-- MOD 97-10 check on the serial, so a mistyped ID is caught (cascade/barton.py checks it).
-- Unique because the serial is; stable because promotion sets it only where it is NULL.
CREATE OR REPLACE FUNCTION marketing.next_barton_id() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT format('04.04.01.%s.%s.%s',
                  lpad((serial / 100000)::text, 2, '0'),
                  lpad((serial % 100000)::text, 5, '0'),
                  lpad((98 - (serial * 100) % 97)::text, 3, '0'))
      FROM (SELECT nextval('marketing.barton_company_seq') AS serial) AS drawn
$$;

-- The slots_created event that enriches a company now. The claim holds while that event is
-- `processing`, so it lapses by itself when the event ends or is rescued (the rescued run,
-- with the same event id, takes it back). The claimant's status is read after the row lock is
-- taken, by a statement of its own, so it sees a rival that committed while we waited.
-- Returns the company, or nothing when it is gone or claimed by another running event.
CREATE OR REPLACE FUNCTION marketing.claim_company_enrichment(p_company bigint, p_event bigint)
RETURNS TABLE (company_name text, domain text, country text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_claimant bigint;
BEGIN
    SELECT c.enrichment_event_id INTO v_claimant
      FROM marketing.company_master AS c WHERE c.id = p_company FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_claimant IS NOT NULL AND v_claimant <> p_event AND EXISTS (
        SELECT FROM marketing.pipeline_events AS e
         WHERE e.id = v_claimant AND e.status = 'processing') THEN
        RETURN;
    END IF;
    RETURN QUERY
        UPDATE marketing.company_master AS c SET enrichment_event_id = p_event
         WHERE c.id = p_company
        RETURNING c.company_name, c.domain, c.country;
END
$$;

-- company_created carries seed 003's manual-trigger payload, so a hand-made event and an
-- intake row look the same to the validation handler.
CREATE OR REPLACE FUNCTION intake.emit_company_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
    SELECT 'company_created',
           jsonb_build_object('record_id', id, 'company_name', company_name,
                              'website', website, 'trigger_time', created_at),
           id
      FROM new_intake
     ORDER BY id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER _300_company_created
    AFTER INSERT ON intake.company_raw_intake
    REFERENCING NEW TABLE AS new_intake
    FOR EACH STATEMENT EXECUTE FUNCTION intake.emit_company_created();

CREATE OR REPLACE TRIGGER _300_company_validated
    AFTER INSERT ON marketing.company_master
    FOR EACH ROW EXECUTE FUNCTION marketing.emit_event('company_validated');

CREATE OR REPLACE TRIGGER _300_company_promoted
    AFTER UPDATE OF barton_id ON marketing.company_master
    FOR EACH ROW WHEN (OLD.barton_id IS NULL AND NEW.barton_id IS NOT NULL)
    EXECUTE FUNCTION marketing.emit_event('company_promoted');

-- slots_created asks the enrichment handler to advance one company's open slots. New slots
-- and slots re-opened (an Apify run failed) are due now; a slot left waiting for an
-- asynchronous provider gets an event due at its deadline, which times the run out if its
-- webhook never came (the handler ignores it if the webhook did); a slot whose provider
-- failed for a passing reason gets one due at its retry_at, even when it leaves a wait.
CREATE OR REPLACE FUNCTION marketing.emit_slots_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO marketing.pipeline_events (event_type, payload, record_id)
        SELECT 'slots_created',
               jsonb_build_object('company_id', company_id, 'reason', 'created'),
               company_id
          FROM new_slots
         WHERE status = 'open'
         GROUP BY company_id
         ORDER BY company_id;
    ELSE
        -- Slots due at about the same time share one event (grouped by the second), due
        -- when the last of them is; the handler skips a slot that is not due yet.
        INSERT INTO marketing.pipeline_events (event_type, payload, record_id, run_after)
        SELECT 'slots_created',
               jsonb_build_object('company_id', company_id, 'reason', reason),
               company_id,
               max(due)
          FROM (SELECT n.company_id,
                       CASE WHEN n.status = 'awaiting_provider' THEN 'deadline'
                            WHEN n.retry_at IS NOT NULL THEN 'retry'
                            ELSE 'reopened' END AS reason,
                       CASE WHEN n.status = 'awaiting_provider' THEN n.pending_deadline
                            WHEN n.retry_at IS NOT NULL THEN n.retry_at
                            ELSE now() END AS due
                  FROM new_slots AS n
                  JOIN old_slots AS o USING (id)
                 WHERE (n.status = 'awaiting_provider'
                        AND (o.status <> 'awaiting_provider'
                             OR n.pending_deadline IS DISTINCT FROM o.pending_deadline))
                    OR (n.status = 'open' AND n.retry_at IS NOT NULL
                        AND n.retry_at IS DISTINCT FROM o.retry_at)
                    OR (n.status = 'open' AND n.retry_at IS NULL AND o.status <> 'open'))
               AS advanced
         GROUP BY company_id, reason, date_trunc('second', due)
         ORDER BY company_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER _300_slots_created
    AFTER INSERT ON marketing.company_slots
    REFERENCING NEW TABLE AS new_slots
    FOR EACH STATEMENT EXECUTE FUNCTION marketing.emit_slots_created();

CREATE OR REPLACE TRIGGER _300_slots_advanced
    AFTER UPDATE ON marketing.company_slots
    REFERENCING OLD TABLE AS old_slots NEW TABLE AS new_slots
    FOR EACH STATEMENT EXECUTE FUNCTION marketing.emit_slots_created();

CREATE OR REPLACE TRIGGER _300_contact_enriched
    AFTER INSERT ON marketing.contact_enrichment
    FOR EACH ROW WHEN (NEW.email IS NOT NULL)
    EXECUTE FUNCTION marketing.emit_event('contact_enriched');

-- A changed email is a new address to verify.
CREATE OR REPLACE TRIGGER _300_contact_email_changed
    AFTER UPDATE OF email ON marketing.contact_enrichment
    FOR EACH ROW WHEN (NEW.email IS NOT NULL AND NEW.email IS DISTINCT FROM OLD.email)
    EXECUTE FUNCTION marketing.emit_event('contact_enriched');

-- Only a deliverable verdict sends the contact on; invalid, disposable, risky and
-- unverifiable addresses stop here (their verdict row says why).
CREATE OR REPLACE TRIGGER _300_email_verified
    AFTER INSERT ON marketing.email_verification
    FOR EACH ROW WHEN (NEW.verdict = 'deliverable')
    EXECUTE FUNCTION marketing.emit_event('email_verified');

CREATE OR REPLACE TRIGGER _300_email_reverified
    AFTER UPDATE ON marketing.email_verification
    FOR EACH ROW WHEN (NEW.verdict = 'deliverable'
                       AND (OLD.verdict IS DISTINCT FROM NEW.verdict
                            OR OLD.email IS DISTINCT FROM NEW.email))
    EXECUTE FUNCTION marketing.emit_event('email_verified');
