"""The program of optax issue #1210, as its reporter ran it.

`optax.lbfgs()` under x64, 100 steps inside `equinox.internal.scan(...,
kind="checkpointed")` on the sphere function (optimum 0 at the origin).
Unpatched optax 0.2.3 and 0.2.4 fail at trace time (the carry changes type).
Prints one line; exits 0 if the optimum was reached, else 1.

usage: PYTHONPATH=<optax overlay> python examples/demo_1210.py
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)

# pylint: disable=g-import-not-at-top,wrong-import-position
import equinox.internal as eqxi
import jax.numpy as jnp
import optax


def sphere(x):
  return jnp.sum(x**2)


def main():
  solver = optax.lbfgs()
  params = jnp.array([1.0, 2.0, 3.0])
  value_and_grad = jax.value_and_grad(sphere)

  def body(carry, _):
    params, state = carry
    value, grad = value_and_grad(params)
    updates, state = solver.update(
        grad, state, params, value=value, grad=grad, value_fn=sphere
    )
    return (optax.apply_updates(params, updates), state), None

  try:
    (params, _), _ = eqxi.scan(
        body,
        (params, solver.init(params)),
        None,
        length=100,
        kind="checkpointed",
    )
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"optax {optax.__version__}: FAILED: {type(e).__name__}: {first}")
    return 1
  loss = float(sphere(params))
  ok = loss < 1e-12
  print(
      f"optax {optax.__version__}: ran 100 steps, final loss {loss:.3e}, "
      + ("reached the optimum" if ok else "did NOT reach the optimum")
  )
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
