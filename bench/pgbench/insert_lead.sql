-- One lead per transaction; its row trigger emits bench_lead_created (bench/schema.sql).
INSERT INTO bench.leads (name, email) VALUES ('Ada Lovelace', 'ada@example.com');
