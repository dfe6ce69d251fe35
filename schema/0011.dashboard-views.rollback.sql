-- Drops the funnel view, the window function and the intake index of 0011.dashboard-views.sql.
DROP INDEX IF EXISTS intake.company_raw_intake_company_idx;
DROP VIEW IF EXISTS marketing.vw_dashboard_funnel;
DROP FUNCTION IF EXISTS marketing.first_event_id_at(timestamptz);
