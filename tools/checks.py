"""Checks the importable optax for the type-stability bugs, one line each.

Prints `PASS|FAIL  <check>  <detail>` per check and exits 0 if all pass, 1
otherwise (2 on bad usage). Used before and after patching (tools/apply.sh)
and for the README's before/after table. Run with PYTHONPATH=<overlay> to
check an overlay instead of the environment's optax.

usage: verify.py [--only CHECK[,CHECK...]] [--list]
"""

import argparse
import contextlib
import sys
import traceback

import jax
import jax.numpy as jnp


@contextlib.contextmanager
def _x64(enable):
  previous = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", enable)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", previous)


def _sphere(x):
  return jnp.sum(x**2)


def _step_fn(opt, fn, value_and_grad=None):
  import optax  # pylint: disable=g-import-not-at-top

  def step(params, state):
    if value_and_grad is None:
      value, grad = jax.value_and_grad(fn)(params)
    else:
      value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(
        grad, state, params, value=value, grad=grad, value_fn=fn
    )
    return optax.apply_updates(params, updates), state

  return step


def check_seed_1210():
  """optax#1210: lbfgs() under x64 in a 100-step lax.scan, reaches optimum."""
  import optax  # pylint: disable=g-import-not-at-top

  with _x64(True):
    opt = optax.lbfgs()
    params = jnp.array([1.0, 2.0, 3.0])
    step = _step_fn(opt, _sphere)
    (params, _), _ = jax.lax.scan(
        lambda c, _: (step(*c), None), (params, opt.init(params)), length=100
    )
    value = float(_sphere(params))
  return value < 1e-10, f"f(x*) = {value:.1e}"


def _compiles(x64, dtype, linesearch):
  import optax  # pylint: disable=g-import-not-at-top

  with _x64(x64):
    opt = optax.lbfgs(linesearch=linesearch())
    traces = 0
    step = _step_fn(opt, _sphere)

    @jax.jit
    def jitted(params, state):
      nonlocal traces
      traces += 1
      return step(params, state)

    params = jnp.array([1.0, 2.0, 3.0], dtype=dtype)
    state = opt.init(params)
    for _ in range(5):
      params, state = jitted(params, state)
    jax.block_until_ready(params)
  return traces == 1, f"{traces} compilation(s) over 5 calls"


def check_compile_once_zoom():
  """optax#1207: a jitted lbfgs() step (x64, float64) compiles once."""
  import optax  # pylint: disable=g-import-not-at-top

  return _compiles(
      True, jnp.float64,
      lambda: optax.scale_by_zoom_linesearch(max_linesearch_steps=15),
  )


def check_compile_once_backtracking():
  """A jitted lbfgs step with backtracking (float32) compiles once."""
  import optax  # pylint: disable=g-import-not-at-top

  return _compiles(
      False, jnp.float32,
      lambda: optax.scale_by_backtracking_linesearch(max_backtracking_steps=15),
  )


def check_store_grad_float32_x64():
  """Backtracking with store_grad=True on float32 params under x64 runs."""
  import optax  # pylint: disable=g-import-not-at-top

  with _x64(True):
    ls = optax.scale_by_backtracking_linesearch(15, store_grad=True)
    opt = optax.lbfgs(linesearch=ls)
    params = jnp.array([1.0, 2.0, 3.0], dtype=jnp.float32)
    jax.jit(_step_fn(opt, _sphere))(params, opt.init(params))
  return True, "runs"


def check_value_and_grad_from_state_float64_loss():
  """value_and_grad_from_state, float64 loss of float32 params (x64) runs."""
  import optax  # pylint: disable=g-import-not-at-top

  with _x64(True):
    fn = lambda x: _sphere(x).astype(jnp.float64)
    opt = optax.lbfgs()
    params = jnp.array([1.0, 2.0, 3.0], dtype=jnp.float32)
    step = _step_fn(opt, fn, optax.value_and_grad_from_state(fn))
    jax.jit(step)(params, opt.init(params))
  return True, "runs"


def _strict(x64, dtype):
  import optax  # pylint: disable=g-import-not-at-top

  with _x64(x64), jax.numpy_dtype_promotion("strict"):
    opt = optax.lbfgs()
    params = jnp.array([1.0, 2.0, 3.0], dtype=dtype)
    step = jax.jit(_step_fn(opt, _sphere))
    state = opt.init(params)
    for _ in range(3):
      params, state = step(params, state)
  return True, "runs"


def check_strict_float32():
  """lbfgs() on float32 params under strict dtype promotion, x64 on."""
  return _strict(True, jnp.float32)


def check_strict_float64():
  """lbfgs() on float64 params under strict dtype promotion, x64 on."""
  return _strict(True, jnp.float64)


CHECKS = {
    "seed-1210-scan-x64": check_seed_1210,
    "compile-once-zoom": check_compile_once_zoom,
    "compile-once-backtracking": check_compile_once_backtracking,
    "store-grad-float32-x64": check_store_grad_float32_x64,
    "value-and-grad-from-state": check_value_and_grad_from_state_float64_loss,
    "strict-float32": check_strict_float32,
    "strict-float64": check_strict_float64,
}


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", help="comma-separated checks to run")
  parser.add_argument("--list", action="store_true", help="list the checks")
  args = parser.parse_args(argv)
  if args.list:
    for name, fn in CHECKS.items():
      print(f"{name}: {fn.__doc__}")
    return 0
  names = list(CHECKS)
  if args.only:
    names = args.only.split(",")
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
      parser.error(f"unknown check(s): {', '.join(unknown)}")
  import optax  # pylint: disable=g-import-not-at-top

  print(f"optax {optax.__version__} from {optax.__file__}")
  ok = True
  for name in names:
    try:
      passed, detail = CHECKS[name]()
    except Exception as e:  # pylint: disable=broad-except
      passed = False
      frames = traceback.extract_tb(e.__traceback__)
      in_optax = [f for f in frames if "/optax/" in f.filename]
      last = (in_optax or frames)[-1]
      where = f"optax/{last.filename.split('/optax/')[-1]}:{last.lineno}"
      detail = f"{type(e).__name__}: {str(e).splitlines()[0][:90]} ({where})"
    ok &= passed
    print(f"{'PASS' if passed else 'FAIL'}  {name:27s} {detail}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
