-- Uninstalls the engine: 0001 created both schemas, and the functions that triggers/ added to
-- them (which yoyo does not track) must go with them, hence CASCADE.
DROP SCHEMA IF EXISTS intake CASCADE;
DROP SCHEMA IF EXISTS marketing CASCADE;
