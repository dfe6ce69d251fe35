-- Puts dead letters back in the queue with a fresh set of attempts, and wakes the listeners:
-- all of them, those of one type (-v event_type=company_created) or one event (-v event_id=123).
-- Safe to run twice: the second run finds nothing dead and replays 0.
-- Run: ./cascadew psql -f maintenance/replay_dead_letters.sql [-v event_type=T | -v event_id=N]
\if :{?event_id}
SELECT marketing.replay_dead_letters(ARRAY[:event_id]::bigint[]) AS replayed;
\elif :{?event_type}
SELECT marketing.replay_dead_letters(NULL, :'event_type') AS replayed;
\else
SELECT marketing.replay_dead_letters() AS replayed;
\endif
