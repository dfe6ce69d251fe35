-- Reference: the same row into a table with no trigger, so no event at all.
INSERT INTO bench.plain_leads (name, email) VALUES ('Ada Lovelace', 'ada@example.com');
