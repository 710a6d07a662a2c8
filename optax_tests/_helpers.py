# Copyright 2026 DeepMind Technologies Limited. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""What the tests of optax_tests/ share: x64, types, L-BFGS and its steps.

Public optax API only, for every release from 0.2.3 and jax from 0.4.27: the
jax compatibility of optax_tests/ is here (x64_precision, types).
"""

import contextlib

import jax
import jax.numpy as jnp
import optax


@contextlib.contextmanager
def x64_precision(enable_x64: bool):
  """Sets jax_enable_x64 inside the context, as optax's own tests do."""
  # jax 0.4.27 has no jax.enable_x64, newer jax no jax.experimental.enable_x64.
  previous = jax.config.read('jax_enable_x64')
  jax.config.update('jax_enable_x64', enable_x64)
  try:
    yield
  finally:
    jax.config.update('jax_enable_x64', previous)


def types(fn, *args):
  """Structure, shapes, dtypes and weak types of fn(*args), only traced."""
  # Not jax.eval_shape: its ShapeDtypeStructs lack weak_type in jax 0.4.27.
  jaxpr, out = jax.make_jaxpr(fn, return_shape=True)(*args)
  return jax.tree.unflatten(
      jax.tree.structure(out),
      [(x.shape, jnp.dtype(x.dtype), x.weak_type) for x in jaxpr.out_avals],
  )


# float32 parameters without and with x64, and float64 parameters.
X64_DTYPES = (
    {'x64': False, 'dtype': 'float32'},
    {'x64': True, 'dtype': 'float32'},
    {'x64': True, 'dtype': 'float64'},
)

# L-BFGS with each linesearch (zoom is optax's default), the gradient from
# jax.value_and_grad or, where the linesearch stores the value and the
# gradient in its state, from optax.value_and_grad_from_state.
LBFGS_STEPS = (
    {'linesearch': 'zoom', 'from_state': False},
    {'linesearch': 'backtracking', 'from_state': False},
    {'linesearch': 'backtracking_store_grad', 'from_state': False},
    {'linesearch': 'zoom', 'from_state': True},
    {'linesearch': 'backtracking_store_grad', 'from_state': True},
)


def lbfgs(linesearch):
  """optax.lbfgs with the named linesearch (build it in the x64 context)."""
  if linesearch == 'zoom':
    return optax.lbfgs()
  if linesearch == 'zoom_verbose':
    return optax.lbfgs(
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=15, verbose=True
        )
    )
  if linesearch == 'none':
    return optax.lbfgs(linesearch=None)
  return optax.lbfgs(
      linesearch=optax.scale_by_backtracking_linesearch(
          max_backtracking_steps=15,
          store_grad=linesearch == 'backtracking_store_grad',
      )
  )


def lbfgs_step(opt, value_fn, from_state):
  """A step (params, state) -> (params, state) of OPT minimizing VALUE_FN.

  Args:
    opt: an L-BFGS optimizer.
    value_fn: the objective, of the parameters.
    from_state: whether the value and the gradient come from
      ``optax.value_and_grad_from_state`` rather than ``jax.value_and_grad``.

  Returns:
    The step function, not jitted.
  """
  if from_state:
    value_and_grad = optax.value_and_grad_from_state(value_fn)
  else:
    value_and_grad = lambda params, state: jax.value_and_grad(value_fn)(params)

  def step(params, state):
    value, grad = value_and_grad(params, state=state)
    # Complex gradients are conjugated to give a descent direction.
    grad = jax.tree.map(jnp.conj, grad)
    updates, state = opt.update(
        grad, state, params, value=value, grad=grad, value_fn=value_fn
    )
    return optax.apply_updates(params, updates), state

  return step
