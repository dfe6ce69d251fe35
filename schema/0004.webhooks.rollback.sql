-- Drops the table of 0004.webhooks.sql.
DROP TABLE IF EXISTS marketing.processed_webhook_events;
