#!/usr/bin/env bash
# The release matrix: each release of patches/targets.tsv (or those given)
# with the minimum jax it declares and the newest it runs with (series.py
# matrix). Per row: apply, apply again (no change), every check its series
# fixes passes, --check, optax_tests/, iterates bit-identical to the release's
# (tests/test_numerics.py), --revert, --check. One environment per jax (the
# newest: $PYTHON's), built while the newest-jax rows run; releases are
# overlays, the oldest and newest pip-installed in a venv over it. Per release
# it prints (never fails on) tools/state_types.py under its newest jax.
# usage: tools/release_matrix.sh [VERSION...]; exit 1 if a row fails, 2 usage.
# shellcheck disable=SC2329  # the step functions are called through cell()
set -euo pipefail

# The one place for what a jax environment needs beside jax==J, jaxlib==J: test
# dependencies (etils: optax 0.2.3/0.2.4), pins by J if pip's newest fails.
deps() {  # deps J
  echo pytest pytest-xdist absl-py chex "etils[epy]" numpy scipy
}

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
"$py" -c 'import jax, pytest, xdist' 2>/dev/null \
  || { echo "release_matrix.sh: $py lacks jax, pytest or pytest-xdist (run tools/test.sh)" >&2; exit 2; }
series() { "$py" "$repo/tools/series.py" "$@"; }
newest_jax=$("$py" -c 'import jax; print(jax.__version__)')
mapfile -t all < <(series matrix)
for v in "$@"; do
  printf '%s\n' "${all[@]}" | grep -q "^$v"$'\t' \
    || { echo "release_matrix.sh: optax $v is not supported" >&2; exit 2; }
done
oldest=${all[0]%%$'\t'*} newest=${all[-1]%%$'\t'*}
# The rows to run, newest jax first (envs are built meanwhile).
mapfile -t rows < <(printf '%s\n' "${all[@]}" | awk -F'\t' -v only=" $* " \
  'only == "  " || index(only, " " $1 " ")' | sort -s -t$'\t' -k3,3Vr)

work=$(mktemp -d "${TMPDIR:-/tmp}/release-matrix.XXXXXX")
export JAX_PLATFORMS=cpu
install() { "$1" -m pip install -q --disable-pip-version-check "${@:2}"; }
interpreter() {  # interpreter X.Y: a pythonX.Y that runs (PATH, else pyenv's)
  local p
  for p in "python$1" "$(pyenv root 2>/dev/null)/versions/$1"*/bin/"python$1"; do
    if "$p" -c "" 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}
build() {  # build JAX PYTHON DIR: DIR/ok, or DIR.err with one line
  local p; p=$(interpreter "$2") \
    || { echo "python$2 not found (or does not run)" >"$3.err"; return; }
  # shellcheck disable=SC2046  # deps: words
  { "$p" -m venv "$3" && install "$3/bin/python" --upgrade pip \
      && install "$3/bin/python" "jax==$1" "jaxlib==$1" $(deps "$1") \
      && touch "$3/ok"; } >"$3.log" 2>&1 \
    || echo "cannot install jax $1 on python$2 (log: $3.log)" >"$3.err"
}
envdir() { echo "$work/jax-$1-py${2:-3}"; }
(for line in "${rows[@]}"; do  # each environment once, in the order of the rows
  IFS=$'\t' read -r _ _ jax python <<<"$line"; dir=$(envdir "$jax" "$python")
  [ "$jax$python" = "$newest_jax" ] || [ -e "$dir.log" ] || build "$jax" "${python:-3}" "$dir"
done) &
builder=$!
trap 'kill "$builder" 2>/dev/null || true; rm -rf "$work"' EXIT

env_python() {  # env_python JAX PYTHON: the interpreter of that environment
  local dir; dir=$(envdir "$1" "$2")
  if [ "$1" = "$newest_jax" ] && [ -z "$2" ]; then echo "$py"; return; fi
  until [ -e "$dir/ok" ] || [ -e "$dir.err" ]; do sleep 1; done
  if [ -e "$dir.err" ]; then cat "$dir.err" >&2; return 1; fi
  echo "$dir/bin/python"
}
real_install() {  # real_install PYTHON RELEASE DIR: optax in a venv over PYTHON's
  "$1" -m venv "$3"
  install "$3/bin/python" --no-deps "$(series wheel "$2")"
  "$1" -c 'import site; print("\n".join(site.getsitepackages()))' >"$("$3/bin/python" \
    -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/shared.pth"
}
apply() { python3 "$repo/tools/apply.py" "${where[@]}" "$@"; }
check_is() { local rc=0; apply --check || rc=$?; [ "$rc" -eq "$1" ]; }
fixes() {  # after apply every check passes, but strict-* without a strict series
  local skip='^$'; compgen -G "$repo/patches/$folder/*strict*" >/dev/null || skip=strict-
  ! sed -n 's/^  after: FAIL  //p' "$log" | cut -d' ' -f1 | grep -v "$skip"
}
optax_tests() {  # from an empty directory, so the optax under test is tested
  (cd "$work/cwd" && "${run[@]}" -m pytest -q -n 2 -p no:cacheprovider \
    "$repo/optax_tests") | tee "$work/pytest.log"
}
numerics() { OPTAX_VERSION=$v "$envpy" -m pytest -q -p no:cacheprovider "$repo/tests/test_numerics.py"; }
# cell LABEL CMD: runs CMD (logged) unless a step failed; LABEL, **FAILED**, skipped
cell() {
  local label=$1; shift
  if [ "$ok" -eq 0 ]; then row+=" skipped |"; return; fi
  if "$@" >>"$log" 2>&1; then row+=" $label |"; else row+=" **FAILED** |"; ok=0; fi
}

mkdir -p "$work/cwd"
table=() failed=0 swept=" "
for line in "${rows[@]}"; do
  IFS=$'\t' read -r v folder jax python <<<"$line"
  printf '\n=== optax %s (patches/%s), jax %s%s\n' "$v" "$folder" "$jax" "${python:+, Python $python}"
  log=$work/$v-$jax.log ok=1 dir=$work/optax-$v-$jax from=overlay
  envpy=$(env_python "$jax" "$python" 2> >(tee -a "$log")) || ok=0
  # XLA's persistent cache (tools/test.sh) for the newest jax only: jax 0.5.3
  # runs wrong programs from it (the 100-step scan of checks.py: f(x*) = 14).
  [ "$envpy" = "$py" ] || unset JAX_COMPILATION_CACHE_DIR
  if [ "$ok" -eq 1 ] && [[ $v == "$oldest" || $v == "$newest" ]]; then
    from=pip
    real_install "$envpy" "$v" "$dir" >>"$log" 2>&1 || ok=0
    where=(--python "$dir/bin/python") run=("$dir/bin/python")
  elif [ "$ok" -eq 1 ]; then
    series overlay "$v" "$dir" --pristine >>"$log" 2>&1 || ok=0
    where=(--python "$envpy" --target "$dir") run=(env "PYTHONPATH=$dir" "$envpy")
  fi
  row="| $v | $folder | $jax | ${python:-$("$py" -c 'import platform; print(platform.python_version())')} | $from |"
  cell "ok" apply
  cell "ok" apply
  cell "ok" fixes
  cell "applied" check_is 0
  cell "passed" optax_tests
  [ "$ok" -eq 0 ] || row="${row% passed |} $(tail -n 1 "$work/pytest.log" | sed 's/ in [0-9.]*s.*//') |"
  cell "bit-identical" numerics
  if [ "$ok" -eq 1 ] && [[ $swept != *" $v "* ]]; then  # its newest jax
    swept+="$v "
    echo "optimizers whose state types change in update (tools/state_types.py):"
    "${run[@]}" "$repo/tools/state_types.py" --config plain 2>&1 | sed 's/^/  /' || true
  fi
  cell "ok" apply --revert
  cell "released" check_is 10
  table+=("$row")
  echo "$row"
  if [ "$ok" -eq 0 ]; then
    failed=1
    echo "--- optax $v, jax $jax: last lines of $log"; tail -n 25 "$log"
  fi
  rm -rf "$dir"
done
echo
echo "| optax | series | jax | python | optax from | apply | again | fixes | check | optax_tests | iterates | revert | check |"
echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|'
printf '%s\n' "${table[@]}" | sort -b -t'|' -k2,2V -k4,4V
exit "$failed"
