#!/usr/bin/env bash
# Benchmark patched vs unpatched vs workaround optax L-BFGS in one run:
# compilations, start-up, per-step and scan times, with ratios.
# usage: tools/bench.sh [--quick] [--json FILE] [--out DIR] [--optax-version V]
#                       [--series DIR]     (logic and details: tools/bench.py)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || { echo "bench.sh: no $py (run tools/test.sh once, or set PYTHON)" >&2; exit 2; }
# Start-up times include compilation: never served from a persistent cache.
unset JAX_COMPILATION_CACHE_DIR
exec "$py" "$repo/tools/bench.py" "$@"
