-- Drops the views of 0005.enrichment-metrics.sql.
DROP VIEW IF EXISTS marketing.vw_phase1_metrics;
DROP VIEW IF EXISTS marketing.vw_company_enrichment_latency;
