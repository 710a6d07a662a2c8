#!/usr/bin/env bash
# The release matrix: every optax release of patches/targets.tsv (or the ones
# given) installed from PyPI into a throwaway environment, then
#   apply -> apply again (changes nothing) -> --check says applied
#   -> optax_tests/ pass on the patched install
#   -> iterates bit-identical to the release's (tests/test_numerics.py)
#   -> --revert -> --check says the files are the release's again;
# and prints, never fails on, the release's unstable optimizers (state_types.py).
# One table row per release; exit 1 if a step fails for any release, 2 on usage.
#
# usage: tools/release_matrix.sh [VERSION...]
# The environments share jax and the test dependencies of $PYTHON (default:
# the project's .venv) through a .pth file; each has its own optax (and, for a
# release pinned in targets.tsv, its own jax).
# shellcheck disable=SC2329  # the step functions are called through cell()
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
"$py" -c 'import jax, pytest, xdist' 2>/dev/null \
  || { echo "release_matrix.sh: $py lacks jax, pytest or pytest-xdist (run tools/test.sh)" >&2; exit 2; }
mapfile -t rows < <("$py" "$repo/tools/series.py" targets)
for v in "$@"; do
  printf '%s\n' "${rows[@]}" | grep -q "^$v"$'\t' \
    || { echo "release_matrix.sh: optax $v is not supported" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/release-matrix.XXXXXX")
trap 'rm -rf "$work"' EXIT
wheels=${OPTAX_WHEEL_CACHE:-$repo/.cache/wheels}
shared_site=$("$py" -c 'import site; print("\n".join(site.getsitepackages()))')
export JAX_PLATFORMS=cpu

make_env() {  # make_env DIR REQUIREMENT...
  "$py" -m venv "$1"
  "$1/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$wheels" "${@:2}"
  "$1/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-index --find-links "$wheels" "${@:2}"
  printf '%s\n' "$shared_site" >"$("$1/bin/python" -c \
    'import sysconfig; print(sysconfig.get_paths()["purelib"])')/shared.pth"
}
apply() { python3 "$repo/tools/apply.py" --python "$env/bin/python" "$@"; }
check_is() { local rc=0; apply --check || rc=$?; [ "$rc" -eq "$1" ]; }
optax_tests() {  # from an empty directory, so the installed optax is tested
  (cd "$work/cwd" && "$env/bin/python" -m pytest -q -n 2 -p no:cacheprovider \
    "$repo/optax_tests") | tee "$work/pytest.log"
}
numerics() { OPTAX_VERSION=$v "$env/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/test_numerics.py"; }

# cell LABEL CMD...: runs CMD, logging its output, unless a step of this
# release failed already; adds LABEL, **FAILED** or "skipped" to the row.
cell() {
  local label=$1; shift
  if [ "$ok" -eq 0 ]; then row+=" skipped |"; return; fi
  if "$@" >>"$log" 2>&1; then row+=" $label |"; else row+=" **FAILED** |"; ok=0; fi
}

mkdir -p "$work/cwd" "$wheels"
table="| optax | series | apply | again | check | optax_tests | iterates | revert | check |"
table+=$'\n|---|---|---|---|---|---|---|---|---|'
failed=0
for line in "${rows[@]}"; do
  IFS=$'\t' read -r v folder pin <<<"$line"
  [ $# -eq 0 ] || [[ " $* " == *" $v "* ]] || continue
  printf '\n=== optax %s (patches/%s%s)\n' "$v" "$folder" "${pin:+, jax $pin}"
  env=$work/env-$v log=$work/$v.log ok=1
  row="| $v | $folder${pin:+ (jax $pin)} |"
  reqs=("optax==$v")
  [ -z "$pin" ] || reqs+=("jax==$pin" "jaxlib==$pin")
  make_env "$env" "${reqs[@]}" >>"$log" 2>&1 || { ok=0; echo "cannot install ${reqs[*]}"; }
  cell "ok" apply
  cell "ok" apply
  cell "applied" check_is 0
  cell "passed" optax_tests
  [ "$ok" -eq 0 ] || row="${row% passed |} $(tail -n 1 "$work/pytest.log" | sed 's/ in [0-9.]*s.*//') |"
  cell "bit-identical" numerics
  if [ "$ok" -eq 1 ]; then
    echo "optimizers whose state types change in update (tools/state_types.py):"
    "$env/bin/python" "$repo/tools/state_types.py" --config plain 2>&1 | sed 's/^/  /' || true
  fi
  cell "ok" apply --revert
  cell "released" check_is 10
  table+=$'\n'"$row"
  echo "$row"
  if [ "$ok" -eq 0 ]; then
    failed=1
    echo "--- optax $v: last lines of $log"; tail -n 25 "$log"
  fi
  rm -rf "$env"
done
printf '\n%s\n' "$table"
exit "$failed"
