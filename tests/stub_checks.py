"""A fast stand-in for tools/checks.py (no jax): $STUB_CHECKS picks a verdict.

tests/test_apply.py points apply.py at it through the test hook
$OPTAX_TYPESTABLE_CHECKS (see apply.sh --help). Same command line and --json
file as checks.py, whose save() it uses. $STUB_CHECKS:
  ""             one check, "stub-runs", passes
  regress        also "stub-released": passes only on released 0.2.8 files
  broken         optax does not import (before and after)
  breaks-import  optax does not import once patched
  import         imports optax first
  hang           writes its PID to $STUB_PID_FILE, stops apply.py (SIGSTOP),
                 then waits to be killed
"""

import argparse
import hashlib
import importlib.util
import os
import pathlib
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import checks  # pylint: disable=g-import-not-at-top,wrong-import-position


def _patched(origin):
  src = pathlib.Path(origin).parent / "_src" / "linesearch.py"
  pins = REPO / "patches" / "manifest" / "0.2.8.sha256"
  digest = hashlib.sha256(src.read_bytes()).hexdigest()
  return any(line.split()[1] == digest
             for line in pins.read_text().splitlines())


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--json")
  parser.add_argument("--path", action="append", default=[])
  args = parser.parse_args(argv)
  sys.path[:0] = args.path
  mode = os.environ.get("STUB_CHECKS", "")
  origin = importlib.util.find_spec("optax").origin
  patched = _patched(origin)
  if mode == "hang":
    pathlib.Path(os.environ["STUB_PID_FILE"]).write_text(str(os.getpid()))
    os.kill(os.getppid(), signal.SIGSTOP)
    time.sleep(600)
  if mode == "broken" or (mode == "breaks-import" and patched):
    error = "optax does not import: ModuleNotFoundError: jax"
    print("checks.py: " + error, file=sys.stderr)
    checks.save(args.json, None, error, [])
    return 3
  if mode == "import":
    import optax  # pylint: disable=g-import-not-at-top,unused-import
  verdicts = [("stub-runs", True, "PASS  stub-runs")]
  if mode == "regress":
    verdicts.append(("stub-released", not patched,
                     ("PASS" if not patched else "FAIL") + "  stub-released"))
  print(f"optax 0.2.8 from {origin}")
  for _, _, line in verdicts:
    print(line)
  checks.save(args.json, ["0.2.8", origin], None, verdicts)
  return 0 if all(v[1] for v in verdicts) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
