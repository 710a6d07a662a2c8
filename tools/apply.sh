#!/usr/bin/env bash
# Patches, checks or reverts the optax of a Python environment: the command
# users run. It finds a Python 3.8+ and hands over to tools/apply.py, which
# takes the same arguments and gives the exit codes (see --help).
set -euo pipefail
for py in python3 python; do
  if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
    exec "$py" -B "$(dirname "$0")/apply.py" "$@"
  fi
done
echo "apply.sh: no Python 3.8+ (python3 or python) on PATH" >&2
exit 2
