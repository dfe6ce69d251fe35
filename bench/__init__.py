"""Cascade's benchmarks: measurements, not tests. `bench/run.sh` runs them all and writes
bench/out/report.md; bench/RESULTS.md records a run and what it means."""
