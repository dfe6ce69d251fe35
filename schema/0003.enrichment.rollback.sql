-- Drops the tables of 0003.enrichment.sql (their triggers go with them), then the functions
-- that triggers/300_enrichment.sql made for them (re-applied after any migration).
DROP TABLE IF EXISTS marketing.provider_attempts;
DROP TABLE IF EXISTS marketing.email_verification;
DROP TABLE IF EXISTS marketing.contact_enrichment;
DROP TABLE IF EXISTS marketing.company_slots;
DROP TABLE IF EXISTS marketing.company_master;
DROP SEQUENCE IF EXISTS marketing.barton_company_seq;
DROP TABLE IF EXISTS intake.company_raw_intake;
DROP TABLE IF EXISTS marketing.workflow_runs;
DROP FUNCTION IF EXISTS marketing.next_barton_id();
DROP FUNCTION IF EXISTS marketing.claim_company_enrichment(bigint, bigint);
DROP FUNCTION IF EXISTS marketing.emit_slots_created();
DROP FUNCTION IF EXISTS intake.emit_company_created();
