-- Drops the table of 0009.campaign-runs.sql, and with it every campaign's run history.
DROP TABLE IF EXISTS marketing.campaign_runs;
