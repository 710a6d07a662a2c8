#!/usr/bin/env bash
# The release matrix: for every optax release in patches/targets.tsv (or the
# ones given), install that release from PyPI into a throwaway environment and
#   apply (tools/apply.sh) -> apply again (must change nothing) -> --check ->
#   the test files the release's series adds to optax, on the patched install
#   -> iterates of patched and pristine equal (tests/test_numerics.py)
#   -> --revert -> sha256 of the files equal to the manifest of the release.
# Prints one table row per release; exits 1 if any step fails for any
# release, 2 on bad usage.
#
# usage: tools/release_matrix.sh [--workers N] [--out DIR] [VERSION...]
#   --workers N   pytest-xdist workers (default 2)
#   --out DIR     keep logs and the table (table.md) in DIR (default: a
#                 temporary directory, removed at exit)
# The throwaway environments share jax and the test dependencies with the
# interpreter in $PYTHON (default: the project's .venv, else python3) through
# a .pth file; each has its own optax, so nothing else is modified. A release
# with a jax pin in targets.tsv (one that does not import with newer jax) also
# gets its own jax and jaxlib of that version.
# shellcheck disable=SC2329  # step functions are called through cell()
set -euo pipefail

die() { echo "release_matrix.sh: $*" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
targets=$repo/patches/targets.tsv
workers=2 out='' versions=()
while [ $# -gt 0 ]; do
  case $1 in
    --workers) [ $# -ge 2 ] || die "--workers needs a number"; workers=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) versions+=("$1"); shift ;;
  esac
done
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers needs a positive number, got '$workers'"
if [ ${#versions[@]} -eq 0 ]; then
  mapfile -t versions < <(grep -v '^#' "$targets" | cut -f1)
fi
for v in "${versions[@]}"; do
  awk -F'\t' -v v="$v" '$1 == v { found = 1 } END { exit !found }' "$targets" \
    || die "optax $v is not in patches/targets.tsv (see tools/apply.sh --list)"
done

py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then py=$repo/.venv/bin/python; else py=python3; fi
fi
"$py" -c 'import jax, pytest, xdist' 2>/dev/null \
  || die "$py lacks jax, pytest or pytest-xdist (run tools/test.sh or pip install .)"

if [ -n "$out" ]; then
  mkdir -p "$out"
  work=$(cd "$out" && pwd)
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/release-matrix.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
wheels=${OPTAX_WHEEL_CACHE:-$repo/.cache/wheels}
mkdir -p "$wheels"
shared_site=$("$py" -c 'import site; print("\n".join(site.getsitepackages()))')

# XLA's persistent compilation cache, shared by the releases of this run:
# releases with identical code compile the same programs. It saves compile
# time only; tracing, and so the compile-once checks, are unaffected.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$work/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

# Test files a series adds to optax: the ones it must pass once applied.
shipped_tests() {
  awk '/^diff --git /{f=substr($3, 3)} /^new file mode/{if (f ~ /_test\.py$/) print f}' \
    "$1"/*.patch | sort -u
}

# Steps of one release, run through cell() (they use $v, $env_dir, $log).
# cell LABEL CMD...: runs CMD (output to the log) unless an earlier step
# failed, and appends LABEL, "**FAILED**" or "skipped" to the row.
cell() {
  local label=$1; shift
  if [ "$ok" -eq 0 ]; then row+=("skipped"); return 0; fi
  if "$@" >>"$log" 2>&1; then row+=("$label"); else row+=("**FAILED**"); ok=0; fi
}
# shellcheck disable=SC2120  # arguments come through cell()
apply_py() { bash "$repo/tools/apply.sh" --python "$env_dir/bin/python" "$@"; }
make_env() {
  local reqs=("optax==$v")
  [ -z "$pin" ] || reqs+=("jax==$pin" "jaxlib==$pin")
  rm -rf "$env_dir"
  "$py" -m venv "$env_dir"
  "$env_dir/bin/python" -m pip download --quiet --disable-pip-version-check \
    --no-deps --only-binary=:all: -d "$wheels" "${reqs[@]}"
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-index --find-links "$wheels" "${reqs[@]}"
  local own
  own=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$shared_site" >"$own/shared.pth"
}
site_of() {
  "$env_dir/bin/python" -c 'import optax, os; print(os.path.dirname(os.path.dirname(optax.__file__)))'
}
second_apply() { apply_py | tee "$work/$v.second" && grep -q 'nothing changed' "$work/$v.second"; }
run_tests() {
  local site f paths=()
  site=$(site_of)
  while read -r f; do paths+=("$site/$f"); done < <(shipped_tests "$repo/patches/$folder")
  [ ${#paths[@]} -gt 0 ] || { echo "patches/$folder adds no test file"; return 1; }
  # From an empty directory, so that the installed optax is the one tested.
  mkdir -p "$work/cwd"
  (cd "$work/cwd" && JAX_PLATFORMS=cpu "$env_dir/bin/python" -m pytest -q \
    -n "$workers" -p no:cacheprovider "${paths[@]}") | tee "$work/$v.pytest"
}
numerics() {
  OPTAX_VERSION=$v "$env_dir/bin/python" -m pytest -q -p no:cacheprovider \
    "$repo/tests/test_numerics.py"
}
hash_check() {
  local site
  site=$(site_of)
  (cd "$site" && sha256sum --strict -c "$repo/patches/manifest/$v.sha256")
}
table=$work/table.md
printf '| optax | series | apply | 2nd apply | check | tests (patched) | iterates | revert | sha256 |\n' >"$table"
printf '|---|---|---|---|---|---|---|---|---|\n' >>"$table"
failed=0
for v in "${versions[@]}"; do
  IFS=$'\t' read -r _ folder pin < <(awk -F'\t' -v v="$v" '$1 == v' "$targets")
  printf '\n=== optax %s (patches/%s%s)\n' "$v" "$folder" "${pin:+, jax $pin}"
  env_dir=$work/env-$v log=$work/$v.log
  : >"$log"
  row=("$v" "patches/$folder${pin:+ (jax $pin)}")
  ok=1
  if ! make_env >>"$log" 2>&1; then
    ok=0
    echo "cannot install optax $v${pin:+ and jax $pin} into a throwaway environment"
  fi
  cell "ok" apply_py
  cell "no-op" second_apply
  cell "applied" apply_py --check
  cell "passed" run_tests
  if [ "$ok" -eq 1 ]; then
    row[-1]=$(grep -E '[0-9]+ passed' "$work/$v.pytest" | tail -n 1 | sed 's/ in [0-9.]*s.*//')
  fi
  cell "bit-identical" numerics
  cell "ok" apply_py --revert
  cell "equal" hash_check
  line=$(printf ' %s |' "${row[@]}")
  echo "|${line}" | tee -a "$table"
  if [ "$ok" -eq 0 ]; then
    failed=1
    echo "--- optax $v: last lines of $log"; tail -n 25 "$log"
  fi
  rm -rf "$env_dir"
done
printf '\n'; cat "$table"
exit "$failed"
