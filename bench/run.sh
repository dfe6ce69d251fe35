#!/usr/bin/env bash
# Cascade's benchmarks (measurements, not tests). Creates bench/.venv with Cascade installed
# editable from this repository plus PgQueuer 1.x, psutil and pyinstrument (benchmark-only
# dependencies: never in pyproject.toml), then runs the scenarios and writes
# bench/out/report.md and bench/out/results.json.
# The server is DATABASE_URL's if set, else an embedded PostgreSQL in bench/.pgdata; every
# measurement runs in a fresh database created there and migrated by prepare_database.
#   bench/run.sh                      every scenario (about 9 minutes on 2 cores)
#   bench/run.sh noop latency         only the scenarios named (noop cascade latency writers history)
#   bench/run.sh --repeats 1 writers  fewer runs per measurement: quicker, noisier
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$bench")"
venv="$bench/.venv"

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "bench: Python 3.11 or newer is required" >&2; exit 1; }

# Reinstall whenever the project's dependencies or this script's change.
stamp="$venv/.installed-$(cat "$root/pyproject.toml" "$bench/run.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bench: installing into $venv" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root" "pgqueuer>=1,<2" "psutil>=5.9" "pyinstrument>=4.6"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

cd "$root"
exec "$venv/bin/python" -m bench "$@"
