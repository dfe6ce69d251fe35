-- An engagement row carries the correlation id of the webhook request that recorded it, and
-- its event takes the id from the row (triggers/400_engagement.sql) rather than from the
-- transaction's setting. The Instantly webhook records many requests' opens and clicks in one
-- statement (group commit, cascade/web/group_commit.py), each with its own request's id, and
-- a transaction has one setting. The default keeps every other writer as it was: a row
-- written by one request, a handler or psql gets the transaction's setting, as its event did.
-- A non-volatile default: existing rows are not rewritten (they read as NULL).
-- depends: 0012.bounded-monitoring-reads

ALTER TABLE marketing.engagement_events
    ADD COLUMN correlation_id text
        DEFAULT nullif(current_setting('cascade.correlation_id', true), '');
