-- Phase 1's success metrics (seed 003, "Success Metrics: Phase 1"), each against the seed's
-- target and excellent thresholds, and the end-to-end latency of every finished company.
-- depends: 0004.webhooks

-- A company is finished when none of its slots is still open or waiting for a provider and
-- none of its contacts still waits for a verdict; its latency runs from its intake row's
-- arrival (or its own creation, for a hand-made event) to the last of those writes.
CREATE VIEW marketing.vw_company_enrichment_latency AS
SELECT company.id AS company_id,
       company.barton_id,
       company.company_name,
       coalesce(intake.created_at, company.created_at) AS started_at,
       greatest(company.promoted_at, max(slot.finished_at), max(verdict.verified_at),
                max(contact.ready_at)) AS finished_at,
       extract(epoch FROM greatest(company.promoted_at, max(slot.finished_at),
                                   max(verdict.verified_at), max(contact.ready_at))
                          - coalesce(intake.created_at, company.created_at))::numeric(12, 3)
           AS latency_seconds,
       count(DISTINCT slot.id) FILTER (WHERE slot.status = 'filled') AS slots_filled,
       count(DISTINCT slot.id) AS slots,
       count(DISTINCT contact.id) FILTER (WHERE contact.status = 'ready') AS contacts_ready
  FROM marketing.company_master AS company
  LEFT JOIN intake.company_raw_intake AS intake ON intake.id = company.source_intake_id
  LEFT JOIN marketing.company_slots AS slot ON slot.company_id = company.id
  LEFT JOIN marketing.contact_enrichment AS contact ON contact.company_id = company.id
  LEFT JOIN marketing.email_verification AS verdict ON verdict.contact_id = contact.id
 WHERE company.status = 'promoted'
 GROUP BY company.id, intake.created_at
HAVING count(*) FILTER (WHERE slot.status IN ('open', 'awaiting_provider')) = 0
   AND count(*) FILTER (WHERE contact.status = 'enriched') = 0;

-- One row per metric. `status` is 'excellent', 'target' (met), 'below' or 'no data'.
CREATE VIEW marketing.vw_phase1_metrics AS
WITH measured AS (
    SELECT 1 AS position, 'validation_success_rate' AS metric, 'percent' AS unit,
           90.0 AS target, 95.0 AS excellent, true AS higher_is_better,
           100.0 * count(*) FILTER (WHERE status IN ('validated', 'duplicate'))
               / nullif(count(*) FILTER (WHERE status <> 'pending'), 0) AS value,
           count(*) FILTER (WHERE status <> 'pending') AS sample_size,
           'intake rows validated (new or duplicate) of those decided' AS definition
      FROM intake.company_raw_intake
    UNION ALL
    SELECT 2, 'email_enrichment_rate', 'percent', 80.0, 90.0, true,
           100.0 * count(*) FILTER (WHERE status = 'filled')
               / nullif(count(*) FILTER (WHERE status IN ('filled', 'unfilled')), 0),
           count(*) FILTER (WHERE status IN ('filled', 'unfilled')),
           'role slots filled with a contact of those finished'
      FROM marketing.company_slots
    UNION ALL
    SELECT 3, 'email_deliverability', 'percent', 80.0, 90.0, true,
           100.0 * count(*) FILTER (WHERE verdict = 'deliverable') / nullif(count(*), 0),
           count(*),
           'verified emails judged deliverable'
      FROM marketing.email_verification
    UNION ALL
    SELECT 4, 'end_to_end_latency_p95', 'seconds', 600.0, 300.0, false,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_seconds),
           count(*),
           '95th percentile, intake to last verdict, over finished companies'
      FROM marketing.vw_company_enrichment_latency
)
SELECT metric,
       round(value::numeric, 2) AS value,
       unit,
       target,
       excellent,
       CASE WHEN value IS NULL THEN 'no data'
            WHEN higher_is_better AND value >= excellent THEN 'excellent'
            WHEN higher_is_better AND value >= target THEN 'target'
            WHEN NOT higher_is_better AND value < excellent THEN 'excellent'
            WHEN NOT higher_is_better AND value < target THEN 'target'
            ELSE 'below' END AS status,
       sample_size,
       definition
  FROM measured
 ORDER BY position;
