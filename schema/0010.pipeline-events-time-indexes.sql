-- Time indexes for the monitoring reads (/metrics, vw_alerts, vw_pipeline_health), which look
-- at the last minutes or hours of marketing.pipeline_events. BRIN, not B-tree: events are
-- written in time order, so a block-range summary finds recent rows at a fraction of a B-tree's
-- size and adds almost nothing to the queue's hot writes (a B-tree entry per status change).
-- Ranges not yet summarised are always read, which is exactly the recent end of the table.
-- depends: 0009.campaign-runs

CREATE INDEX pipeline_events_created_brin
    ON marketing.pipeline_events USING brin (created_at) WITH (autosummarize = on);
CREATE INDEX pipeline_events_finished_brin
    ON marketing.pipeline_events USING brin (finished_at) WITH (autosummarize = on);
