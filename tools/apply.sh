#!/usr/bin/env bash
# Patch the optax of a Python environment with the series for its release,
# printing the verdicts of tools/verify.py before and after.
#
# usage: tools/apply.sh [--python PATH] [--check | --revert | --dry-run | --list]
#   (default)   apply the series; a second apply changes nothing
#   --check     exit 0 applied, 10 not applied, 11 cannot apply (files differ)
#   --revert    take the series back out
#   --dry-run   say what apply would do, change nothing
#   --list      supported optax releases and the series each uses
#   --python    interpreter of the environment to patch; default: the active
#               virtualenv's, else this repository's .venv (created from
#               pyproject.toml if missing)
# Every change is dry-run on the whole series first: a series that does not
# apply (or revert) cleanly changes nothing.
set -euo pipefail

die() { echo "apply.sh: $*" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=apply python=
while [ $# -gt 0 ]; do
  case $1 in
    --python) [ $# -ge 2 ] || die "--python needs a path"; python=$2; shift 2 ;;
    --check|--revert|--dry-run|--list) mode=${1#--}; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

targets=$repo/patches/targets.tsv
if [ "$mode" = list ]; then
  grep -v '^#' "$targets" | while IFS=$'\t' read -r version folder _; do
    echo "optax $version: patches/$folder/ ($(find "$repo/patches/$folder" -name '*.patch' | wc -l) patches)"
  done
  exit 0
fi

if [ -z "$python" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    python=$VIRTUAL_ENV/bin/python
  else
    if [ ! -x "$repo/.venv/bin/python" ]; then
      echo "apply.sh: creating $repo/.venv from pyproject.toml"
      python3 -m venv "$repo/.venv"
      "$repo/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "$repo" \
        2> >(grep -v '^WARNING: Location' >&2)
    fi
    python=$repo/.venv/bin/python
  fi
fi
[ -x "$python" ] || die "not an executable interpreter: $python"

info=$("$python" - <<'EOF' 2>/dev/null
import importlib.metadata, importlib.util, os
spec = importlib.util.find_spec("optax")
if spec is None or not spec.origin:
  raise SystemExit(1)
print(importlib.metadata.version("optax"))
print(os.path.dirname(os.path.dirname(spec.origin)))
EOF
) || die "no optax in $python's environment (install it: $python -m pip install optax)"
version=${info%%$'\n'*}
root=${info#*$'\n'}
folder=$(awk -F'\t' -v v="$version" '$1 == v { print $2 }' "$targets")
[ -n "$folder" ] || die "optax $version is not supported (see tools/apply.sh --list)"
series=$repo/patches/$folder
patches=("$series"/*.patch)
echo "optax $version at $root/optax, series patches/$folder (${#patches[@]} patches)"

# Whether the whole series applies (forward) or reverts (-R) in sequence,
# tried on a scratch copy of the package.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/apply.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
series_ok() {
  local p order=("${patches[@]}")
  rm -rf "${scratch:?}/optax" && cp -r "$root/optax" "$scratch/optax"
  if [ "$1" = -R ]; then
    order=(); for p in "${patches[@]}"; do order=("$p" "${order[@]}"); done
  fi
  for p in "${order[@]}"; do
    patch -p1 -s -f "$@" --no-backup-if-mismatch -d "$scratch" <"$p" >/dev/null 2>&1 \
      || return 1
  done
}
state() {
  if series_ok -R; then echo applied
  elif series_ok --forward; then echo not-applied
  else echo cannot-apply
  fi
}
manifest=$repo/patches/manifest/$version.sha256
[ -f "$manifest" ] || die "no manifest for optax $version: run tools/make_manifest.sh $version"
pristine() { (cd "$root" && sha256sum --quiet --strict -c "$manifest" >/dev/null 2>&1); }
verdicts() { "$python" "$repo/tools/verify.py" | sed "s/^/  $1: /" || true; }
clear_bytecode() {
  find "$root/optax" -name '__pycache__' -type d -prune -exec rm -rf {} +
}

current=$(state)
case $mode in
  check)
    echo "$current"
    case $current in applied) exit 0 ;; not-applied) exit 10 ;; *) exit 11 ;; esac ;;
  dry-run)
    case $current in
      applied) echo "already applied: apply would change nothing" ;;
      not-applied)
        pristine || die "locally modified files (sha256 differs from optax $version): apply would refuse"
        echo "apply would patch: $(grep -h '^diff --git' "${patches[@]}" | awk '{print substr($3, 3)}' | sort -u | tr '\n' ' ')" ;;
      *) die "the installed files differ from optax $version as released: cannot apply" ;;
    esac ;;
  apply)
    case $current in
      applied) echo "already applied: nothing changed"; exit 0 ;;
      cannot-apply) die "the installed files differ from optax $version as released: nothing changed" ;;
    esac
    pristine || die "$(cd "$root" && sha256sum --quiet -c "$manifest" 2>/dev/null | head -n 1 | cut -d: -f1) is locally modified (sha256 differs from optax $version): nothing changed"
    [ -w "$root/optax/_src" ] || die "$root/optax/_src is not writable: nothing changed"
    echo "before:"; verdicts before
    for p in "${patches[@]}"; do
      patch -p1 -s -f --forward --no-backup-if-mismatch -d "$root" <"$p"
    done
    clear_bytecode
    echo "after:"; verdicts after
    echo "applied patches/$folder to optax $version (revert: tools/apply.sh --revert)" ;;
  revert)
    case $current in
      not-applied) echo "not applied: nothing changed"; exit 0 ;;
      cannot-apply) die "the installed files are neither pristine nor patched: nothing changed" ;;
    esac
    [ -w "$root/optax/_src" ] || die "$root/optax/_src is not writable: nothing changed"
    for ((i = ${#patches[@]} - 1; i >= 0; i--)); do
      patch -p1 -s -f -R --no-backup-if-mismatch -d "$root" <"${patches[i]}"
    done
    clear_bytecode
    pristine || die "reverted, but files differ from optax $version as released (see $manifest)"
    echo "reverted patches/$folder from optax $version: files match the released sha256" ;;
esac
