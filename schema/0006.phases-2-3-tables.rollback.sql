-- Drops the tables of 0006.phases-2-3-tables.sql, dependants before what they reference.
DROP TABLE IF EXISTS marketing.contact_ltv;
DROP TABLE IF EXISTS marketing.relationship_graph;
DROP TABLE IF EXISTS marketing.contact_timeline;
DROP TABLE IF EXISTS marketing.performance_metrics;
DROP TABLE IF EXISTS marketing.ab_tests;
DROP TABLE IF EXISTS marketing.follow_up_queue;
DROP TABLE IF EXISTS marketing.crm_sync_log;
DROP TABLE IF EXISTS marketing.lead_scores;
DROP TABLE IF EXISTS marketing.responses;
DROP TABLE IF EXISTS marketing.engagement_events;
DROP TABLE IF EXISTS marketing.delivery_log;
DROP TABLE IF EXISTS marketing.message_queue;
DROP TABLE IF EXISTS marketing.campaign_contacts;
DROP TABLE IF EXISTS marketing.campaigns;
DROP TABLE IF EXISTS marketing.message_templates;
