-- Drops everything 0001.engine-core.sql created.
DROP TABLE IF EXISTS marketing.listeners;
DROP TABLE IF EXISTS marketing.shq_guardrails;
DROP TABLE IF EXISTS marketing.shq_process_key_reference;
DROP TABLE IF EXISTS marketing.event_types;
DROP TABLE IF EXISTS marketing.pipeline_errors;
DROP TABLE IF EXISTS marketing.pipeline_events;
-- CASCADE: the engine's functions (triggers/) live in these schemas too, and this is uninstall.
DROP SCHEMA IF EXISTS intake CASCADE;
DROP SCHEMA IF EXISTS marketing CASCADE;
