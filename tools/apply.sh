#!/bin/sh
# The command users run (bash or sh): finds a Python 3.8+ and hands over to
# tools/apply.py (same arguments and exit codes: see --help), with -E: no
# PYTHON* variable for apply.py itself (it asks the chosen interpreter).
set -eu
for py in python3 python; do
  if "$py" -E -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
    exec "$py" -B -E "$(dirname "$(readlink -f "$0")")/apply.py" "$@"
  fi
done
echo "apply.sh: no Python 3.8+ (python3 or python) on PATH" >&2
exit 2
