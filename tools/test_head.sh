#!/usr/bin/env bash
# Test the patch series (patches/main) against optax HEAD or any ref.
#
# usage: tools/test_head.sh [--optax-src DIR | --url URL] [--ref REF]
#                           [--no-tests] [--no-lint] [--evidence] [--json FILE]
#
# Checks out REF in a throwaway clone, detects patches already upstream,
# applies the series with `git am -3` (clean / 3-way / conflict), lints the
# touched files as upstream does and runs the linesearch and L-BFGS tests on
# the patched optax installed in a cached venv under .cache/venvs.
# Without --optax-src and without network, tests the newest optax sdist from
# PyPI ($OPTAX_SDIST overrides it) and says that it is a release, not HEAD.
# Run `tools/test_head.sh --help` for all options; the logic is in
# tools/test_head.py. Exit status: 0 ok or already fixed upstream,
# 1 conflict / test failure / new lint finding, 2 usage or setup error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-}
if [ -z "$py" ]; then
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
      py=$candidate
      break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "test_head.sh: no python3 found (set PYTHON)" >&2
  exit 2
fi
command -v git >/dev/null 2>&1 || { echo "test_head.sh: git is required" >&2; exit 2; }
exec "$py" "$here/test_head.py" "$@"
