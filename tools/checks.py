"""Checks the importable optax for the type-stability bugs, one line each.

Prints `optax <version> from <path>`, then `PASS|FAIL  <check>  <detail>`
per check. Exits 0 if all pass, 1 if some fail, 2 on bad usage (it takes no
arguments), 3 after the one line `optax does not import: <ExcType>: <message>`
when optax (or the jax under it) does not import. PYTHONPATH=<overlay> checks
an overlay. tools/apply.py runs it with the interpreter of the environment it
patches: it imports only the standard library, jax, optax and lbfgs_steps.py.
"""

import argparse
import sys
import traceback


def _compiled_once(result):
  changes = result.type_changes
  detail = (f"{result.compilations} compilation(s) over "
            f"{len(result.seconds)} calls")
  if changes:
    detail += f"; {len(changes)} state leaves change type, e.g. {changes[0]}"
  return result.compilations == 1, detail


def _at_optimum(result):
  value = float((result.params[-1].astype("float64") ** 2).sum())  # sphere
  return value < 1e-10, f"f(x*) = {value:.1e} after {len(result.params)} steps"


# name: (lbfgs_steps.Config fields, verdict of the Result or None: it runs)
CHECKS = {
    "seed-1210-scan-x64": (  # optax#1210: a 100-step scan reaches the optimum
        dict(x64=True, dtype="float64", steps=100, scan=True), _at_optimum),
    "compile-once-zoom": (  # optax#1207: a jitted lbfgs() step compiles once
        dict(x64=True, dtype="float64", linesearch="zoom"), _compiled_once),
    "compile-once-backtracking": (dict(linesearch="backtracking"),
                                  _compiled_once),
    "store-grad-float32-x64": (
        dict(x64=True, linesearch="backtracking", store_grad=True, steps=1),
        None),
    "value-and-grad-from-state": (  # a float64 loss of float32 params
        dict(x64=True, loss_dtype="float64", from_state=True, steps=1), None),
    "strict-float32": (dict(x64=True, strict=True, steps=3), None),
    "strict-float64": (
        dict(x64=True, dtype="float64", strict=True, steps=3), None),
}


def _message(e, width=None):  # <ExcType>: <first line, cut to width>
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:width]}"


def _failure(e):
  """`<ExcType>: <first line> (<optax file>:<line>)` of an exception."""
  frames = traceback.extract_tb(e.__traceback__)
  last = ([f for f in frames if "/optax/" in f.filename] or frames)[-1]
  where = f"optax/{last.filename.split('/optax/')[-1]}:{last.lineno}"
  return f"{_message(e, 90)} ({where})"


def main(argv):
  argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
  try:
    import optax  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except
    print(f"optax does not import: {_message(e)}")
    return 3
  import lbfgs_steps  # pylint: disable=g-import-not-at-top
  print(f"optax {optax.__version__} from {optax.__file__}")
  ok = True
  for name, (fields, verdict) in CHECKS.items():
    try:
      result = lbfgs_steps.run(lbfgs_steps.Config(**fields))
      passed, detail = verdict(result) if verdict else (True, "runs")
    except Exception as e:  # pylint: disable=broad-except
      passed, detail = False, _failure(e)
    ok &= passed
    print(f"{'PASS' if passed else 'FAIL'}  {name:27s} {detail}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
