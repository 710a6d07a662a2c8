#!/usr/bin/env bash
# Patch the optax of a Python environment (or of a source checkout) with the
# series for its release, printing the verdicts of tools/verify.py before and
# after. The logic is in tools/apply.py.
#
# usage: tools/apply.sh [--python PATH | --target DIR] [--force]
#                       [--check | --revert | --dry-run | --list]
#   (default)   apply the series; a second apply changes nothing
#   --check     exit 0 applied, 10 not applied, 11 cannot apply (files
#               differ from the release, or an unsupported release whose
#               checks fail), 12 not needed (unsupported release whose
#               checks all pass)
#   --revert    take the series back out: files equal the release's sha256
#   --dry-run   say what apply would do, change nothing
#   --list      supported optax releases and the series each uses
#   --python    interpreter of the environment to patch; default: the active
#               virtualenv's, else this repository's .venv (created from
#               pyproject.toml if missing)
#   --target    an optax source checkout (DIR/optax/__init__.py) to patch
#               instead of an environment; --python then chooses the
#               interpreter (with jax) that runs the checks on it
#   --force     apply to an unsupported release or modified files anyway
#               (the change is still tried on a scratch copy first)
# Refuses, changing nothing: an unknown release or a development build, a
# file that differs from the released one, a read-only package, a patch
# that would write outside optax/. Applies through a journal (a rerun after
# a crash or Ctrl-C recovers), one run at a time (lock file), and records
# what it applied in .optax-typestable.json next to the package.
set -euo pipefail

die() { echo "apply.sh: $*" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
python='' target='' args=()
while [ $# -gt 0 ]; do
  case $1 in
    --python) [ $# -ge 2 ] || die "--python needs a path"; python=$2; shift 2 ;;
    --target) [ $# -ge 2 ] || die "--target needs a directory"; target=$2; shift 2 ;;
    --check|--revert|--dry-run|--list|--force) args+=("$1"); shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for a in ${args[@]+"${args[@]}"}; do
  [ "$a" = --list ] && exec python3 "$repo/tools/apply.py" --list
done
[ -z "$target" ] || [ -d "$target" ] || die "no such directory: $target"

# The interpreter of the environment to patch, or to run the checks of a
# --target with.
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

if [ -n "$target" ]; then
  exec python3 "$repo/tools/apply.py" --target "$target" --verify-python "$python" ${args[@]+"${args[@]}"}
fi
exec python3 "$repo/tools/apply.py" --python "$python" ${args[@]+"${args[@]}"}
