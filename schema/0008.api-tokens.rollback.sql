-- Drops the table of 0008.api-tokens.sql, and with it every API token.
DROP TABLE IF EXISTS marketing.api_tokens;
