-- Webhook de-duplication (seed 004 §4.10): one row per delivery a provider sent us, keyed by
-- the provider's event id or, where it gives none, a documented composite key (web.py). The
-- row commits in the same transaction as the delivery's effects, so a redelivery either finds
-- it and changes nothing, or finds nothing because the first delivery left no trace.
-- depends: 0003.enrichment

CREATE TABLE marketing.processed_webhook_events (
    provider       text        NOT NULL,
    event_key      text        NOT NULL,
    event_name     text        NOT NULL,
    verified       boolean     NOT NULL,
    correlation_id text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processed_webhook_events_pkey PRIMARY KEY (provider, event_key)
);
CREATE INDEX processed_webhook_events_received_idx
    ON marketing.processed_webhook_events (received_at);
