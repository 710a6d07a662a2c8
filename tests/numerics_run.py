"""Runs optimizers on standard problems; writes every iterate to an .npz file.

Run under a pristine and a patched optax (PYTHONPATH=<overlay>); the two files
must be byte-for-byte equal. usage: numerics_run.py OUT.npz
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def ill_conditioned_quadratic(x):
  scales = jnp.logspace(0, 4, x.shape[0], dtype=x.dtype)
  return 0.5 * jnp.sum(scales * x**2) + jnp.sum(jnp.sin(x))


def zakharov(x):
  ii = jnp.arange(1, x.shape[0] + 1, dtype=x.dtype)
  s = jnp.sum(0.5 * ii * x)
  return jnp.sum(x**2) + s**2 + s**4


PROBLEMS = {
    "rosenbrock": (rosenbrock, np.linspace(-1.2, 1.0, 10)),
    "quadratic": (ill_conditioned_quadratic, np.linspace(-3.0, 3.0, 50)),
    "zakharov": (zakharov, np.linspace(0.5, 1.5, 5)),
}
# (x64, params dtype): configurations where unpatched optax runs at all.
CONFIGS = ((False, "float32"), (True, "float64"), (True, "float32"))


def optimizers(optax, dtype, x64):
  opts = {
      "lbfgs": lambda: optax.lbfgs(),
      "lbfgs_backtracking": lambda: optax.lbfgs(
          linesearch=optax.scale_by_backtracking_linesearch(
              max_backtracking_steps=20)),
      "sgd_zoom": lambda: optax.chain(
          optax.sgd(1e-3), optax.scale_by_zoom_linesearch(20)),
  }
  # store_grad=True fails on unpatched optax for float32 under x64.
  if not (x64 and dtype == "float32"):
    opts["lbfgs_backtracking_store_grad"] = lambda: optax.lbfgs(
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=20, store_grad=True))
  return opts


def run(out):
  results = {}
  for x64, dtype in CONFIGS:
    jax.config.update("jax_enable_x64", x64)
    import optax  # pylint: disable=g-import-not-at-top
    for pname, (fn, x0) in PROBLEMS.items():
      for oname, make in optimizers(optax, dtype, x64).items():
        opt = make()
        stateful = oname in ("lbfgs", "lbfgs_backtracking_store_grad")
        value_and_grad = (optax.value_and_grad_from_state(fn) if stateful
                          else None)

        key = f"{'x64' if x64 else 'x32'}/{dtype}/{pname}/{oname}"
        try:
          @jax.jit
          def step(params, state, opt=opt, fn=fn, vg=value_and_grad):
            if vg is None:
              value, grad = jax.value_and_grad(fn)(params)
            else:
              value, grad = vg(params, state=state)
            updates, state = opt.update(
                grad, state, params, value=value, grad=grad, value_fn=fn)
            return optax.apply_updates(params, updates), state, value

          params = jnp.asarray(x0, dtype=dtype)
          state = opt.init(params)
          iterates, values = [], []
          for _ in range(30):
            params, state, value = step(params, state)
            iterates.append(np.asarray(params))
            values.append(np.asarray(value))
          results[key + "/params"] = np.stack(iterates)
          results[key + "/values"] = np.stack(values)
          results[key + "/state"] = np.concatenate(
              [np.ravel(np.asarray(x, dtype=np.float64))
               for x in jax.tree.leaves(state)])
        except Exception as e:  # pylint: disable=broad-except
          # Unpatched old releases crash in some configurations (the bugs
          # the series fixes); the comparison skips what did not run.
          results[key + "/error"] = np.asarray(f"{type(e).__name__}: {e}"[:200])

  np.savez(out, **results)


if __name__ == "__main__":
  run(sys.argv[1])
