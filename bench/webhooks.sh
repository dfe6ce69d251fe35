#!/usr/bin/env bash
# Webhook ingestion (bench/webhooks.py): the real app and a plain Starlette ceiling under
# uvicorn, driven over loopback by wrk (closed loop, peak requests/s) and an open-loop
# constant-rate client (latency at half the peak). A measurement, not a test.
#   bench/webhooks.sh run                        Instantly email_opened; wrk -c 16, 64; 15 s
#   bench/webhooks.sh run --target apify --repeats 3
#   bench/webhooks.sh run --variants walk-off
#                                                also the app with proposed changes (in the
#                                                bench's server process only)
#   bench/webhooks.sh parse-cost                 http.parse's walk, timed with timeit
# The server is DATABASE_URL's if set, else bench/server.py's embedded PostgreSQL; each run gets
# a fresh migrated database. Output: bench/out/webhooks/ (gitignored).
# Needs wrk (installed here with apt-get when missing and possible); py-spy only for --profile.
# Python: $PYTHON, else bench/.venv (made by bench/run.sh), else the project's .venv.
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$bench")"

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in "$bench/.venv/bin/python" "$root/.venv/bin/python"; do
    if [ -x "$candidate" ]; then python="$candidate"; break; fi
  done
fi
if [ -z "$python" ]; then
  echo "webhooks: no Python found; run ./cascadew once, or set PYTHON" >&2
  exit 1
fi

if [ "${1:-run}" = run ] && ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "webhooks: installing wrk with apt-get" >&2
    apt-get install -y -qq wrk >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  else
    echo "webhooks: wrk is required (Debian: apt-get install wrk; macOS: brew install wrk)" >&2
    exit 1
  fi
fi

cd "$root"
exec "$python" -m bench.webhooks "${@:-run}"
