#!/usr/bin/env bash
# Refresh patches/main from a working branch of an optax checkout and write
# patches/main/PR.md from a real run of tools/test_head.sh.
#
# usage: tools/make_pr.sh --from DIR --branch BR [--base COMMIT] [--no-pr]
#        tools/make_pr.sh --optax-src DIR [--ref REF]   (PR.md only)
#        tools/make_pr.sh --report FILE                 (PR.md from a report)
#
# Patches get `--zero-commit --no-signature --base=<base>` and the fixed
# series date, so regenerating an unchanged branch is byte-identical.
# The logic is in tools/make_pr.py; see docs/contributing_upstream.md.
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
  echo "make_pr.sh: no python3 found (set PYTHON)" >&2
  exit 2
fi
exec "$py" "$here/make_pr.py" "$@"
