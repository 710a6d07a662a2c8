#!/usr/bin/env bash
# The project's test command (README, .ci/run). On a fresh machine with only
# python3 it creates .venv from pyproject.toml, then:
#   1. runs the repository's own tests (tests/: series consistency, lint,
#      the tools; the bit-identical numerics test runs in step 4, for every
#      release under the jax it needs);
#   2. runs optax_tests/ on PRISTINE optax $VERSION and requires every test
#      that targets a bug to fail there (tools/expect_failures.py);
#   3. runs optax's own tests on patched optax $VERSION: linesearch_test.py,
#      the L-BFGS tests of alias_test.py and the test module of every other
#      file the series modifies: all must pass;
#   4. the release matrix (tools/release_matrix.sh): every release in
#      patches/targets.tsv installed from PyPI, apply -> second apply is a
#      no-op -> the test files its series ships pass -> iterates
#      bit-identical to the pristine release's -> revert -> sha256 equal to
#      the release's;
#   5. the benchmark smoke test (tools/bench.sh --quick): fails if the
#      patched step compiles more than once, never on timing noise.
# Pristine and patched optax are overlays built from the PyPI wheel
# (tools/overlay.sh): the environment's own optax is never modified.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
VERSION=${OPTAX_VERSION:-0.2.8}
SERIES=${OPTAX_SERIES:-patches/0.2.8}
start=$SECONDS

step() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - start)); }

step "environment: .venv"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check . \
  2> >(grep -v '^WARNING: Location' >&2)
export PYTHON="$repo/.venv/bin/python"
py=$PYTHON
"$py" -c 'import jax, optax; print("jax", jax.__version__, "| env optax", optax.__version__)'

work=$(mktemp -d "${TMPDIR:-/tmp}/optax-typestable.XXXXXX")
trap 'rm -rf "$work"' EXIT
# XLA's persistent compilation cache for the test runs (compile time only;
# tracing and so the compile-once checks are unaffected). tools/bench.sh,
# which measures compilation, unsets it.
export JAX_COMPILATION_CACHE_DIR="$work/jax-cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
bash tools/overlay.sh "$VERSION" "$work/pristine" >/dev/null
bash tools/overlay.sh "$VERSION" "$work/patched" "$SERIES" >/dev/null

# pytest exits 5 when it collected nothing: with `set -e` that fails the run.
step "1. repository tests"
"$py" -m pytest -q -n 2 tests --ignore=tests/test_numerics.py

step "2. optax_tests on pristine optax $VERSION: bug-targeting tests must fail"
rc=0
PYTHONPATH="$work/pristine" "$py" -m pytest -q -n 2 optax_tests \
  -k "x64 and float32 or other_dtypes" --junitxml="$work/pristine.xml" >"$work/pristine.log" 2>&1 \
  || rc=$?
tail -n 1 "$work/pristine.log"
if [ "$rc" -ne 1 ]; then
  cat "$work/pristine.log"
  echo "expected test failures (exit 1) on pristine optax, got exit $rc" >&2
  exit 1
fi
"$py" tools/expect_failures.py "$work/pristine.xml"

step "3. optax's own tests on patched optax $VERSION"
mapfile -t own_tests < <(
  cd "$work/patched"
  echo optax/_src/linesearch_test.py
  sed -n 's|^diff --git a/\(optax/\S*\)\.py b/.*|\1_test.py|p' "$repo/$SERIES"/*.patch \
    | sort -u | while read -r t; do
      case $t in *_test_test.py|optax/_src/linesearch_test.py) ;; *) [ -f "$t" ] && echo "$t" ;; esac
    done
)
(
  cd "$work/patched"
  PYTHONPATH="$work/patched" "$py" -m pytest -q -n 2 -p no:cacheprovider "${own_tests[@]}"
  PYTHONPATH="$work/patched" "$py" -m pytest -q -n 2 -p no:cacheprovider \
    optax/_src/alias_test.py -k "lbfgs or LBFGS"
)

step "4. release matrix: apply, tests, revert on every supported release"
bash tools/release_matrix.sh

step "5. benchmark smoke test"
bash tools/bench.sh --quick --out "$work/bench"

step "done: all checks passed"
