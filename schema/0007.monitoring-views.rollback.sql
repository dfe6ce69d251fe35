-- Drops the views, function and alert thresholds of 0007.monitoring-views.sql and gives
-- shq_guardrails back its original kinds.
DROP VIEW IF EXISTS marketing.vw_pipeline_health;
DROP VIEW IF EXISTS marketing.vw_alerts;
DROP VIEW IF EXISTS marketing.vw_campaign_overview;
DROP VIEW IF EXISTS marketing.vw_recent_errors;
DROP VIEW IF EXISTS marketing.vw_latency_by_stage;
DROP VIEW IF EXISTS marketing.vw_event_latency;
DROP VIEW IF EXISTS marketing.vw_pending_by_type;
DROP FUNCTION IF EXISTS marketing.describe_interval(interval);
DELETE FROM marketing.shq_guardrails WHERE kind = 'alert_threshold';
ALTER TABLE marketing.shq_guardrails DROP CONSTRAINT IF EXISTS shq_guardrails_min_sample_check;
ALTER TABLE marketing.shq_guardrails DROP COLUMN IF EXISTS min_sample;
ALTER TABLE marketing.shq_guardrails DROP CONSTRAINT shq_guardrails_kind_check;
ALTER TABLE marketing.shq_guardrails ADD CONSTRAINT shq_guardrails_kind_check
    CHECK (kind IN ('rate_limit', 'budget'));
