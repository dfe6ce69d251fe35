-- Requeues events stuck in 'processing': those whose lease has expired, and those held by a
-- listener that is no longer registered in marketing.listeners (it died; its heartbeat row was
-- forgotten). Listeners rescue expired leases by themselves every few seconds; this is for when
-- none is running, or you cannot wait for the lease to expire.
-- Each requeued event counts the attempt (it may have run) and gets an error row.
-- Safe to run twice: the second run finds nothing stuck.
-- Run: ./cascadew psql -f maintenance/requeue_stuck_events.sql
UPDATE marketing.pipeline_events AS e
   SET lease_expires_at = now() - interval '1 second'
 WHERE e.status = 'processing'
   AND NOT EXISTS (SELECT 1 FROM marketing.listeners AS l WHERE l.listener_id = e.lease_owner);
SELECT marketing.rescue_expired_leases() AS requeued;
