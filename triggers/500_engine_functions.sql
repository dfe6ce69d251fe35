-- The engine's non-trivial SQL, kept as functions so that every listener, the CLI and psql
-- share one definition: the leased claim with per-type concurrency limits, the rescue of
-- expired leases, and dead-letter replay.

-- Claims up to p_limit events of p_event_types for p_owner with a lease, committing
-- status 'processing' so that every other listener can see (and count) them. A type with a
-- concurrency_limit is claimed first, under a transaction-scoped advisory lock of its own, so
-- two listeners cannot both see room for the last slot: the limit holds across processes.
-- The unlimited types then share what room is left in id order, so no type starves another.
CREATE OR REPLACE FUNCTION marketing.claim_leased_events(
    p_owner text, p_event_types text[], p_limit integer, p_lease_seconds double precision
) RETURNS SETOF marketing.pipeline_events
LANGUAGE plpgsql AS $$
DECLARE
    v_type      text;
    v_ceiling   integer;
    v_room      integer;
    v_claimed   integer;
    v_left      integer := p_limit;
    v_unlimited text[];
BEGIN
    SELECT coalesce(array_agg(t.event_type) FILTER (WHERE et.concurrency_limit IS NULL), '{}')
      INTO v_unlimited
      FROM unnest(p_event_types) AS t(event_type)
      LEFT JOIN marketing.event_types AS et USING (event_type);

    FOR v_type, v_ceiling IN
        SELECT et.event_type, et.concurrency_limit
          FROM marketing.event_types AS et
         WHERE et.event_type = ANY (p_event_types) AND et.concurrency_limit IS NOT NULL
         ORDER BY et.event_type
    LOOP
        EXIT WHEN v_left <= 0;
        PERFORM pg_advisory_xact_lock(hashtextextended('cascade.claim:' || v_type, 0));
        SELECT least(v_left, v_ceiling - count(*)) INTO v_room
          FROM marketing.pipeline_events
         WHERE status = 'processing' AND event_type = v_type;
        CONTINUE WHEN v_room <= 0;
        RETURN QUERY SELECT * FROM marketing.lease_events(p_owner, ARRAY[v_type], v_room, p_lease_seconds);
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        v_left := v_left - v_claimed;
    END LOOP;

    IF v_left > 0 AND cardinality(v_unlimited) > 0 THEN
        RETURN QUERY SELECT * FROM marketing.lease_events(p_owner, v_unlimited, v_left, p_lease_seconds);
    END IF;
END
$$;

-- The leasing UPDATE itself: the events due first among the given types, skipping any another
-- listener holds. Per type, through pipeline_events_claimable_idx (see CLAIM_LOCKED).
CREATE OR REPLACE FUNCTION marketing.lease_events(
    p_owner text, p_event_types text[], p_limit integer, p_lease_seconds double precision
) RETURNS SETOF marketing.pipeline_events
LANGUAGE sql AS $$
    UPDATE marketing.pipeline_events AS e
       SET status = 'processing',
           attempts = e.attempts + 1,
           lease_owner = p_owner,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
     WHERE e.id IN (SELECT due.id
                      FROM unnest(p_event_types) AS t(event_type)
                     CROSS JOIN LATERAL (
                           SELECT c.id, c.run_after
                             FROM marketing.pipeline_events AS c
                            WHERE c.event_type = t.event_type
                              AND c.status IN ('pending', 'failed')
                              AND c.run_after <= now()
                            ORDER BY c.run_after, c.id
                            LIMIT p_limit
                              FOR UPDATE SKIP LOCKED) AS due
                     ORDER BY due.run_after, due.id
                     LIMIT p_limit)
    RETURNING e.*;
$$;

-- Returns events whose lease expired (their listener died or stalled) to the queue. The WHERE
-- re-checks status and expiry under the row lock, so a rescue racing a completion never
-- reverts a processed event; the completion's own compare-and-set on attempts and owner makes
-- the slow listener's late write roll back. The attempt counts: a poison event that kills its
-- listener ends dead after max_attempts (skipped, for a non-critical type), not in a crash loop.
CREATE OR REPLACE FUNCTION marketing.rescue_expired_leases() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_rescued integer;
BEGIN
    WITH expired AS (
        SELECT p.id, coalesce(et.max_attempts, 5) AS max_attempts,
               coalesce(et.critical, true) AS critical
          FROM marketing.pipeline_events AS p
          LEFT JOIN marketing.event_types AS et USING (event_type)
         WHERE p.status = 'processing' AND p.lease_expires_at < clock_timestamp()
           FOR UPDATE OF p SKIP LOCKED
    ), rescued AS (
        UPDATE marketing.pipeline_events AS e
           SET status = CASE WHEN e.attempts < x.max_attempts THEN 'failed'
                             WHEN x.critical THEN 'dead' ELSE 'processed' END,
               outcome = CASE WHEN e.attempts < x.max_attempts THEN NULL
                              WHEN x.critical THEN 'dead' ELSE 'skipped' END,
               finished_at = CASE WHEN e.attempts >= x.max_attempts THEN clock_timestamp() END,
               processed_at = CASE WHEN e.attempts >= x.max_attempts AND NOT x.critical
                                   THEN clock_timestamp() END,
               run_after = now(),
               last_error = format('lease expired: listener %s stopped heartbeating', e.lease_owner),
               lease_owner = NULL,
               lease_expires_at = NULL
          FROM expired AS x
         WHERE e.id = x.id
        RETURNING e.id, e.event_type, e.record_id, e.attempts, e.status, e.last_error, x.critical
    )
    INSERT INTO marketing.pipeline_errors
           (event_id, event_type, record_id, error_message, severity, attempt)
    SELECT id, event_type, record_id, last_error,
           CASE WHEN status = 'dead' THEN 'critical' WHEN NOT critical THEN 'warning'
                ELSE 'error' END,
           attempts
      FROM rescued;
    GET DIAGNOSTICS v_rescued = ROW_COUNT;
    IF v_rescued > 0 THEN
        PERFORM pg_notify('cascade_events', '');
    END IF;
    RETURN v_rescued;
END
$$;

-- Puts dead events back in the queue with a fresh set of attempts: all of them, those of one
-- type, or the listed ids. Safe to run twice: the second run finds nothing dead and returns 0.
CREATE OR REPLACE FUNCTION marketing.replay_dead_letters(
    p_event_ids bigint[] DEFAULT NULL, p_event_type text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_replayed integer;
BEGIN
    UPDATE marketing.pipeline_events
       SET status = 'pending', attempts = 0, run_after = now(), outcome = NULL,
           finished_at = NULL, processed_at = NULL, replay_count = replay_count + 1
     WHERE status = 'dead'
       AND (p_event_ids IS NULL OR id = ANY (p_event_ids))
       AND (p_event_type IS NULL OR event_type = p_event_type);
    GET DIAGNOSTICS v_replayed = ROW_COUNT;
    IF v_replayed > 0 THEN
        PERFORM pg_notify('cascade_events', '');
    END IF;
    RETURN v_replayed;
END
$$;

-- Dead-letters events that no running listener can handle: their type is in no live
-- listener's event_types (listeners register theirs with every heartbeat). Events older than
-- p_grace_seconds only, so a deploy that starts the new handler's listener a little late can
-- be given time. Claims read per handled type, so without this such events would wait for
-- ever. At most 1,000 a call; SKIP LOCKED keeps concurrent sweeps out of each other's way.
CREATE OR REPLACE FUNCTION marketing.bury_unhandled_events(
    p_grace_seconds double precision, p_live_seconds double precision
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_buried integer;
BEGIN
    WITH RECURSIVE live AS (
        SELECT l.event_types FROM marketing.listeners AS l
         WHERE l.heartbeat_at > now() - make_interval(secs => p_live_seconds)
    ), handled AS (
        SELECT DISTINCT unnest(live.event_types) AS event_type FROM live
    ), waiting_types AS (
        -- The types that have waiting events, one index probe each (a loose scan of
        -- pipeline_events_claimable_idx): this runs every few seconds on every listener, and
        -- walking every waiting event to find the few of a type nobody handles grew with
        -- the backlog.
        (SELECT e.event_type FROM marketing.pipeline_events AS e
          WHERE e.status IN ('pending', 'failed') ORDER BY e.event_type LIMIT 1)
        UNION ALL
        SELECT (SELECT e.event_type FROM marketing.pipeline_events AS e
                 WHERE e.status IN ('pending', 'failed') AND e.event_type > w.event_type
                 ORDER BY e.event_type LIMIT 1)
          FROM waiting_types AS w
         WHERE w.event_type IS NOT NULL
    ), unhandled_types AS (
        SELECT w.event_type
          FROM waiting_types AS w
         WHERE w.event_type IS NOT NULL
           AND EXISTS (SELECT 1 FROM live)
           AND w.event_type NOT IN (SELECT h.event_type FROM handled AS h)
    ), unhandled AS (
        SELECT due.id
          FROM unhandled_types AS w
         CROSS JOIN LATERAL (
               SELECT e.id
                 FROM marketing.pipeline_events AS e
                WHERE e.event_type = w.event_type
                  AND e.status IN ('pending', 'failed')
                  AND e.run_after <= now()
                  AND e.created_at <= now() - make_interval(secs => p_grace_seconds)
                ORDER BY e.run_after, e.id
                LIMIT 1000
                  FOR UPDATE OF e SKIP LOCKED) AS due
         LIMIT 1000
    ), buried AS (
        UPDATE marketing.pipeline_events AS e
           SET status = 'dead', outcome = 'dead', attempts = e.attempts + 1,
               finished_at = clock_timestamp(),
               last_error = format('no handler registered for event type %L', e.event_type)
          FROM unhandled AS u
         WHERE e.id = u.id
        RETURNING e.id, e.event_type, e.record_id, e.attempts, e.last_error
    )
    INSERT INTO marketing.pipeline_errors
           (event_id, event_type, record_id, error_message, severity, attempt)
    SELECT id, event_type, record_id, last_error, 'critical', attempts FROM buried;
    GET DIAGNOSTICS v_buried = ROW_COUNT;
    RETURN v_buried;
END
$$;

-- Sets the transaction-local lineage that pipeline_events' column defaults read (parent,
-- run, correlation id), as handling.SET_EVENT_CONTEXT does. A batch handler's per-item
-- statement calls it with its item's values, so the events that statement's triggers emit
-- at its end name their own parent even when many items share one transaction. A NULL leaves
-- that part as it is (a webhook sharing such a statement keeps its request's correlation id).
CREATE OR REPLACE FUNCTION marketing.set_event_context(
    p_event_id text, p_run_id text, p_correlation_id text
) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT (p_event_id IS NULL OR set_config('cascade.event_id', p_event_id, true) IS NOT NULL)
       AND (p_run_id IS NULL OR set_config('cascade.run_id', p_run_id, true) IS NOT NULL)
       AND (p_correlation_id IS NULL
            OR set_config('cascade.correlation_id', p_correlation_id, true) IS NOT NULL)
$$;
