-- Every ```sql block of seed 003 (the operations guide), verbatim and in order: the
-- statements that must run unchanged against a migrated database (CONTRACT).
-- tests/migrations/test_seed_003_statements.py runs them, and checks this copy against the
-- seed wherever the seed is on disk. Edit only by copying the seed again.

-- Event processing latency
SELECT
  event_type,
  AVG(EXTRACT(EPOCH FROM (processed_at - created_at))) as avg_latency_sec,
  COUNT(*) as total_events
FROM marketing.pipeline_events
WHERE processed_at IS NOT NULL
GROUP BY event_type;

-- Error rate by stage
SELECT * FROM marketing.vw_error_rate_24h;

-- Unresolved errors
SELECT * FROM marketing.vw_unresolved_errors;

-- Create PLE tables
CREATE TABLE marketing.ab_tests (
  test_id SERIAL PRIMARY KEY,
  test_name TEXT,
  variant_a JSONB,
  variant_b JSONB,
  start_date TIMESTAMP,
  end_date TIMESTAMP,
  winner TEXT
);

CREATE TABLE marketing.performance_metrics (
  metric_id SERIAL PRIMARY KEY,
  campaign_id INT,
  segment TEXT,
  template_id INT,
  send_time TIME,
  open_rate NUMERIC,
  click_rate NUMERIC,
  reply_rate NUMERIC,
  measured_at TIMESTAMP
);

-- Find best performing segments
SELECT
  segment,
  AVG(open_rate) as avg_open,
  AVG(reply_rate) as avg_reply,
  COUNT(*) as campaigns
FROM marketing.performance_metrics
GROUP BY segment
ORDER BY avg_reply DESC;

-- Create BIT tables
CREATE TABLE marketing.contact_timeline (
  event_id SERIAL PRIMARY KEY,
  contact_id INT,
  event_type TEXT, -- email_sent, reply_received, meeting_booked, deal_closed
  event_data JSONB,
  event_timestamp TIMESTAMP
);

CREATE TABLE marketing.relationship_graph (
  relationship_id SERIAL PRIMARY KEY,
  contact_a_id INT,
  contact_b_id INT,
  relationship_type TEXT, -- colleague, referral, manager
  discovered_at TIMESTAMP
);

CREATE TABLE marketing.contact_ltv (
  contact_id INT PRIMARY KEY,
  total_emails_sent INT,
  total_replies INT,
  meetings_booked INT,
  deals_closed INT,
  total_revenue NUMERIC,
  last_contact_at TIMESTAMP
);

-- Identify high-value contacts
SELECT
  c.full_name,
  c.company_name,
  ltv.total_revenue,
  ltv.meetings_booked,
  ltv.total_replies * 100.0 / NULLIF(ltv.total_emails_sent, 0) as reply_rate
FROM marketing.contact_ltv ltv
JOIN marketing.contact_enrichment c ON c.id = ltv.contact_id
WHERE ltv.total_revenue > 10000
ORDER BY ltv.total_revenue DESC;

-- Pending events (should be low)
SELECT event_type, COUNT(*) as pending_count
FROM marketing.pipeline_events
WHERE status = 'pending'
GROUP BY event_type;

-- Processing latency by stage
SELECT
  event_type,
  AVG(EXTRACT(EPOCH FROM (processed_at - created_at))) as avg_seconds,
  MAX(EXTRACT(EPOCH FROM (processed_at - created_at))) as max_seconds
FROM marketing.pipeline_events
WHERE processed_at IS NOT NULL
  AND created_at > NOW() - INTERVAL '1 hour'
GROUP BY event_type
ORDER BY avg_seconds DESC;

-- Recent errors
SELECT
  event_type,
  record_id,
  error_message,
  severity,
  created_at
FROM marketing.pipeline_errors
WHERE resolved = FALSE
ORDER BY created_at DESC
LIMIT 20;

-- Error rate by stage
SELECT
  event_type,
  COUNT(*) as error_count,
  COUNT(*) FILTER (WHERE severity = 'critical') as critical_count
FROM marketing.pipeline_errors
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY event_type
ORDER BY error_count DESC;

-- Campaign overview (Phase 2)
SELECT
  c.campaign_name,
  COUNT(DISTINCT cc.contact_id) as total_contacts,
  COUNT(DISTINCT dl.contact_id) FILTER (WHERE dl.status = 'delivered') as delivered,
  COUNT(DISTINCT ee.contact_id) FILTER (WHERE ee.event_type = 'open') as opened,
  COUNT(DISTINCT r.contact_id) as replied
FROM marketing.campaigns c
LEFT JOIN marketing.campaign_contacts cc ON c.id = cc.campaign_id
LEFT JOIN marketing.delivery_log dl ON cc.contact_id = dl.contact_id
LEFT JOIN marketing.engagement_events ee ON cc.contact_id = ee.contact_id
LEFT JOIN marketing.responses r ON cc.contact_id = r.contact_id
WHERE c.created_at > NOW() - INTERVAL '7 days'
GROUP BY c.id, c.campaign_name
ORDER BY c.created_at DESC;

-- Purge old processed events (keep 30 days)
DELETE FROM marketing.pipeline_events
WHERE status = 'processed'
  AND processed_at < NOW() - INTERVAL '30 days';

-- Purge old resolved errors (keep 90 days)
DELETE FROM marketing.pipeline_errors
WHERE resolved = TRUE
  AND resolved_at < NOW() - INTERVAL '90 days';

-- Vacuum and analyze
VACUUM ANALYZE marketing.pipeline_events;
VACUUM ANALYZE marketing.pipeline_errors;

-- Manually insert event for testing
INSERT INTO marketing.pipeline_events (event_type, payload, status)
VALUES (
  'company_created',
  jsonb_build_object(
    'record_id', 999,
    'company_name', 'Test Company',
    'website', 'https://test.com',
    'trigger_time', NOW()
  ),
  'pending'
);

-- GDPR: Export all data for a contact
SELECT * FROM marketing.contact_enrichment WHERE email = 'user@example.com';
SELECT * FROM marketing.engagement_events WHERE contact_id = 123;

-- GDPR: Delete all data for a contact
DELETE FROM marketing.engagement_events WHERE contact_id = 123;
DELETE FROM marketing.contact_enrichment WHERE id = 123;
