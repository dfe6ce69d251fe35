#!/usr/bin/env bash
# Phase 1 end to end (bench/phase1.py): companies from a CSV through enrichment and
# verification, sandbox providers, listeners as separate processes. A measurement, not a test.
#   bench/phase1.sh full                     10,000 companies; 1 and 2 listeners × MAX_LEASED 16, 64
#   bench/phase1.sh full --rows 1000 --listeners 1 --max-leased 16 --profile
#   bench/phase1.sh bound                    1,000 companies, 200 ms per provider call,
#                                            concurrency 8, 16, 32
# The server is DATABASE_URL's if set, else bench/server.py's embedded PostgreSQL; each run gets
# a fresh migrated database. Output: bench/out/phase1/ (gitignored).
# Python: $PYTHON, else bench/.venv (made by bench/run.sh), else the project's .venv
# (./cascadew makes it). pyinstrument is needed only for --profile.
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$bench")"

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in "$bench/.venv/bin/python" "$root/.venv/bin/python"; do
    if [ -x "$candidate" ]; then python="$candidate"; break; fi
  done
fi
[ -n "$python" ] || { echo "phase1: no Python found; run ./cascadew once, or set PYTHON" >&2; exit 1; }

cd "$root"
exec "$python" -m bench.phase1 "${@:-full}"
