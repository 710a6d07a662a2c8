#!/usr/bin/env bash
# The test command (README, .ci/run); its steps are listed here only. On a
# fresh machine with only python3 it creates .venv from pyproject.toml, then:
#   1. tests/: this repository's own tests (series, tools, command lines);
#   2. optax_tests/ on PRISTINE optax $VERSION: each test function, aimed at
#      a bug, must fail there (tools/failing.py: a subTest alone does not);
#   3. optax's own tests of what the series touches, and its L-BFGS tests in
#      alias_test.py, on PATCHED optax $VERSION: all must pass;
#   4. the release matrix (matrix/test_releases.py), every row of
#      `tools/series.py matrix`: apply, checks, numerics, revert on each
#      row; optax_tests/ on each release's newest jax, and on the minimum
#      jax of the oldest and newest release (every jax of the matrix);
#   5. the benchmark smoke test (tools/bench.py --quick): fails if the patched
#      step compiles more than once, never on timing.
# Pristine/patched optax: overlays of the PyPI wheel; no environment is
# modified. Needs PyPI the first time, python3.9 (PATH or pyenv) for step 4.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
VERSION=${OPTAX_VERSION:-0.2.8}
start=$SECONDS
step() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - start)); }

step "environment: .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check . \
  2> >(grep -v '^WARNING: Location' >&2)
export JAX_PLATFORMS=cpu
py=$repo/.venv/bin/python
"$py" -c 'import jax, optax; print("jax", jax.__version__, "| env optax", optax.__version__)'

work=$(mktemp -d "${TMPDIR:-/tmp}/optax-typestable.XXXXXX")
trap 'rm -rf "$work"' EXIT
# XLA's persistent compilation cache: for the newest jax only (bench.py and
# matrix/test_releases.py drop it; CONTRIBUTING says why).
export JAX_COMPILATION_CACHE_DIR=$work/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
"$py" tools/series.py overlay "$VERSION" "$work/pristine" --pristine >/dev/null
"$py" tools/series.py overlay "$VERSION" "$work/patched" >/dev/null

step "1. repository tests"
"$py" -m pytest -q -n 2 tests

step "2. optax_tests on pristine optax $VERSION: each test function must fail"
mapfile -t defined < <(grep -ho '^  def test_[a-z0-9_]*' optax_tests/*_test.py | cut -c7-)
PYTHONPATH=$work/pristine "$py" tools/failing.py "${defined[@]}" -- \
  -q --tb=no -n 2 optax_tests

step "3. optax's own tests on patched optax $VERSION"
mapfile -t own < <("$py" tools/series.py tests "$VERSION" "$work/patched")
cd "$work/patched"
PYTHONPATH=$work/patched "$py" -m pytest -q -n 2 -p no:cacheprovider \
  "${own[@]}"
PYTHONPATH=$work/patched "$py" -m pytest -q -n 2 -p no:cacheprovider \
  optax/_src/alias_test.py -k "lbfgs or LBFGS"
cd "$repo"

step "4. release matrix: apply, tests, revert on every supported release"
"$py" -m pytest -v -s -rA matrix/test_releases.py

step "5. benchmark smoke test"
"$py" tools/bench.py --quick --optax-version "$VERSION"

step "done: all checks passed"
