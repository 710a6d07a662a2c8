"""Checks the importable optax for the type-stability bugs, one line each.

Prints `optax <version> from <path>`, then `PASS|FAIL  <check>  <detail>`
per check. Exits 0 if all pass, 1 if some fail, 2 on bad usage, and 3 after
the one line `optax does not import: <ExcType>: <message>` when optax (or
the jax under it) does not import. Run with PYTHONPATH=<overlay> to check
an overlay instead of the environment's optax; tools/apply.py runs it with
the interpreter of the environment it patches, so it imports only the
standard library, jax, optax and tools/lbfgs_steps.py (the harness).

usage: checks.py [--only CHECK[,CHECK...]] [--list]
"""

import argparse
import sys
import traceback


def _runs(result):
  return True, "runs"


def _compiled_once(result):
  detail = (f"{result.compilations} compilation(s) over "
            f"{len(result.seconds)} calls")
  changed = [f"{path}: {old} -> {result.types_after.get(path)}"
             for path, old in result.types_before.items()
             if result.types_after.get(path) != old]
  if changed:
    detail += f"; {len(changed)} state leaves change type, e.g. {changed[0]}"
  return result.compilations == 1, detail


def _at_optimum(result):
  value = float((result.params[-1].astype("float64") ** 2).sum())  # sphere
  return value < 1e-10, f"f(x*) = {value:.1e} after {len(result.params)} steps"


# name: (what it checks, lbfgs_steps.Config fields, verdict of the Result)
CHECKS = {
    "seed-1210-scan-x64": (
        "optax#1210: lbfgs() under x64 in a 100-step lax.scan, reaches optimum",
        dict(x64=True, dtype="float64", steps=100, scan=True), _at_optimum),
    "compile-once-zoom": (
        "optax#1207: a jitted lbfgs() step (x64, float64) compiles once",
        dict(x64=True, dtype="float64", linesearch="zoom"), _compiled_once),
    "compile-once-backtracking": (
        "A jitted lbfgs step with backtracking (float32) compiles once",
        dict(linesearch="backtracking"), _compiled_once),
    "store-grad-float32-x64": (
        "Backtracking with store_grad=True on float32 params under x64 runs",
        dict(x64=True, linesearch="backtracking", store_grad=True, steps=1),
        _runs),
    "value-and-grad-from-state": (
        "value_and_grad_from_state, float64 loss of float32 params (x64) runs",
        dict(x64=True, loss_dtype="float64", from_state=True, steps=1), _runs),
    "strict-float32": (
        "lbfgs() on float32 params under strict dtype promotion, x64 on",
        dict(x64=True, strict=True, steps=3), _runs),
    "strict-float64": (
        "lbfgs() on float64 params under strict dtype promotion, x64 on",
        dict(x64=True, dtype="float64", strict=True, steps=3), _runs),
}


def _failure(e):
  """`<ExcType>: <first line> (<optax file>:<line>)` of an exception."""
  frames = traceback.extract_tb(e.__traceback__)
  last = ([f for f in frames if "/optax/" in f.filename] or frames)[-1]
  where = f"optax/{last.filename.split('/optax/')[-1]}:{last.lineno}"
  message = (str(e).splitlines() or [""])[0][:90]
  return f"{type(e).__name__}: {message} ({where})"


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", help="comma-separated checks to run")
  parser.add_argument("--list", action="store_true", help="list the checks")
  args = parser.parse_args(argv)
  if args.list:
    for name, (doc, _, _) in CHECKS.items():
      print(f"{name}: {doc}")
    return 0
  names = args.only.split(",") if args.only else list(CHECKS)
  unknown = [n for n in names if n not in CHECKS]
  if unknown:
    parser.error(f"unknown check(s): {', '.join(unknown)}")
  try:
    import optax  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except
    message = (str(e).splitlines() or [""])[0]
    print(f"optax does not import: {type(e).__name__}: {message}")
    return 3
  import lbfgs_steps  # pylint: disable=g-import-not-at-top

  print(f"optax {optax.__version__} from {optax.__file__}")
  ok = True
  for name in names:
    _, fields, verdict = CHECKS[name]
    try:
      passed, detail = verdict(lbfgs_steps.run(lbfgs_steps.Config(**fields)))
    except Exception as e:  # pylint: disable=broad-except
      passed, detail = False, _failure(e)
    ok &= passed
    print(f"{'PASS' if passed else 'FAIL'}  {name:27s} {detail}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
