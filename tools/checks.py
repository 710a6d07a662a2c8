"""Checks the importable optax for the type-stability bugs, one line each.

Prints `optax <version> from <path>`, then `PASS|FAIL  <check>  <detail>`
per check. Exits 0 if all pass, 1 if some fail, 2 on bad usage, 3 after the
line `optax does not import: <ExcType>: <message>`. --json FILE: the verdicts
also go to FILE (run() reads it: no start-up output corrupts it); --path DIR:
DIR first on sys.path. It imports only the standard library, jax, optax and
lbfgs_steps.py.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import traceback


def _compiled_once(result):
  changes = result.type_changes
  detail = (f"{result.compilations} compilation(s) over "
            f"{len(result.seconds)} calls")
  if changes:
    detail += f"; {len(changes)} state leaves change type, e.g. {changes[0]}"
  return result.compilations == 1, detail


def _dtypes_kept_at_optimum(result):  # as #1210 compared the states
  value = float((result.params[-1].astype("float64") ** 2).sum())  # sphere
  detail = f"f(x*) = {value:.1e} after {len(result.params)} steps"
  changes = result.dtype_changes
  if changes:
    detail += f"; {len(changes)} state leaves change dtype, e.g. {changes[0]}"
  return value < 1e-10 and not changes, detail


# name: (lbfgs_steps.Config fields, verdict of the Result or None: it runs)
CHECKS = {
    "seed-1210-scan-x64": (  # optax#1210: the state's dtypes across a scan
        dict(x64=True, dtype="float64", steps=100, scan=True),
        _dtypes_kept_at_optimum),
    "compile-once-zoom": (  # optax#1207: a jitted lbfgs() step compiles once
        dict(x64=True, dtype="float64", linesearch="zoom"), _compiled_once),
    "compile-once-backtracking": (dict(linesearch="backtracking"),
                                  _compiled_once),
    "store-grad-float32-x64": (
        dict(x64=True, linesearch="backtracking", store_grad=True, steps=1),
        None),
    "value-and-grad-from-state": (  # a float32 loss of float64 params
        dict(x64=True, dtype="float64", loss_dtype="float32", from_state=True,
             steps=1), None),
    "strict-float32": (dict(x64=True, strict=True, steps=3), None),
    "strict-float64": (
        dict(x64=True, dtype="float64", strict=True, steps=3), None),
}
# The bugs patches/main fixes: an optax release without them has the fix.
MAIN = [name for name in CHECKS if not name.startswith("strict-")]


def _message(e, width=None):  # <ExcType>: <first line, cut to width>
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:width]}"


def _verdict(lbfgs_steps, name, fields, verdict):  # (name, passed, line)
  try:
    result = lbfgs_steps.run(lbfgs_steps.Config(**fields))
    passed, detail = verdict(result) if verdict else (True, "runs")
  except Exception as e:  # pylint: disable=broad-except
    frames = traceback.extract_tb(e.__traceback__)  # the last in optax
    last = ([f for f in frames if "/optax/" in f.filename] or frames)[-1]
    where = f"optax/{last.filename.rpartition('/optax/')[2]}:{last.lineno}"
    passed, detail = False, f"{_message(e, 90)} ({where})"
  line = f"{'PASS' if passed else 'FAIL'}  {name:27s} {detail}"
  print(line)
  return name, passed, line


def save(path, optax, error, verdicts):
  if path:  # for run(): [version, file] of optax or None, why not, verdicts
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"optax": optax, "error": error, "checks": verdicts}, f)


def run(python, *args, env=None):
  """({'optax':, 'error':, 'checks':} as save() wrote, or None; what it
  printed) of this file run by PYTHON with ARGS; -E and an empty cwd: no
  PYTHONPATH, no ./optax shadows optax. Raises OSError if PYTHON does not
  run."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "verdicts.json")
    said = subprocess.run(
        [python, "-E", __file__, "--json", out, *args], cwd=tmp, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.STDOUT, errors="replace", check=False).stdout
    with contextlib.suppress(OSError, ValueError):
      with open(out, encoding="utf-8") as f:
        return json.load(f), said
    return None, said


def main(argv):
  found, error, verdicts = None, None, []
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="also write the verdicts to this file")
  parser.add_argument("--path", action="append", default=[])
  args = parser.parse_args(argv)
  sys.path[:0] = args.path
  try:
    import optax  # pylint: disable=g-import-not-at-top
    import lbfgs_steps  # pylint: disable=g-import-not-at-top
    found = [optax.__version__, optax.__file__]
    print(f"optax {found[0]} from {found[1]}")
    verdicts = [_verdict(lbfgs_steps, name, *c) for name, c in CHECKS.items()]
  except Exception as e:  # pylint: disable=broad-except
    error = f"optax does not import: {_message(e)}"
    print(error)
  save(args.json, found, error, verdicts)
  return 3 if error else 0 if all(v[1] for v in verdicts) else 1

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
