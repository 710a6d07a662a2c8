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
"""Type stability of the states of linesearches and L-BFGS.

The state returned by ``update`` must have the structure, shapes, dtypes and
weak types of the state it was given, so that the update can be carried by
``jax.lax.scan``, ``jax.lax.while_loop`` or ``jax.lax.cond`` and a jitted step
is compiled once. See https://github.com/google-deepmind/optax/issues/1210 and
https://github.com/google-deepmind/optax/issues/1207.
"""

import contextlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import optax


@contextlib.contextmanager
def _x64_precision(enable_x64: bool):
  previous = jax.config.read('jax_enable_x64')
  jax.config.update('jax_enable_x64', enable_x64)
  try:
    yield
  finally:
    jax.config.update('jax_enable_x64', previous)


def _get_optimizer(name):
  """Optimizers under test, built inside the x64 context of the test."""
  backtracking = lambda **kw: optax.scale_by_backtracking_linesearch(
      max_backtracking_steps=15, **kw
  )
  return {
      'lbfgs': optax.lbfgs,
      'lbfgs_backtracking': lambda: optax.lbfgs(linesearch=backtracking()),
      'lbfgs_backtracking_store_grad': lambda: optax.lbfgs(
          linesearch=backtracking(store_grad=True)
      ),
  }[name]()


# L-BFGS with each linesearch (the zoom linesearch is the default): its state
# holds the linesearch state.
_OPTIMIZERS = (
    'lbfgs',
    'lbfgs_backtracking',
    'lbfgs_backtracking_store_grad',
)
# Optimizers whose state stores the value and the gradient, as needed by
# optax.value_and_grad_from_state.
_STORE_VALUE_AND_GRAD = (
    'lbfgs',
    'lbfgs_backtracking_store_grad',
)


def _cases():
  """Named test cases: x64, dtypes, parameter structures, gradient sources."""
  cases = []

  def add(
      opt,
      x64,
      dtype,
      structure='array',
      value_dtype=None,
      grad_fn='value_and_grad',
  ):
    name = '_'.join(
        ['x64' if x64 else 'x32', opt, dtype, structure]
        + ([f'value_{value_dtype}'] if value_dtype else [])
        + ([grad_fn] if grad_fn != 'value_and_grad' else [])
    )
    cases.append(
        dict(
            testcase_name=name,
            opt=opt,
            x64=x64,
            dtype=dtype,
            structure=structure,
            value_dtype=value_dtype,
            grad_fn=grad_fn,
        )
    )

  for x64 in (False, True):
    dtypes = ['float16', 'bfloat16', 'float32', 'complex64']
    if x64:
      dtypes += ['float64', 'complex128']
    for dtype in dtypes:
      for opt in _OPTIMIZERS:
        add(opt, x64, dtype)
  for x64, dtype in ((False, 'float32'), (True, 'float32'), (True, 'float64')):
    # An objective of another dtype than the parameters: float64 objective of
    # float32 parameters under x64, float16 objective of float32 parameters
    # otherwise.
    other = None
    if dtype == 'float32':
      other = 'float64' if x64 else 'float16'
    for opt in _OPTIMIZERS:
      add(opt, x64, dtype, structure='tree')
      if x64 and dtype == 'float32':
        add(opt, x64, dtype, structure='mixed')
      if other:
        add(opt, x64, dtype, value_dtype=other)
    for opt in _STORE_VALUE_AND_GRAD:
      add(opt, x64, dtype, grad_fn='value_and_grad_from_state')
      if other:
        add(
            opt,
            x64,
            dtype,
            value_dtype=other,
            grad_fn='value_and_grad_from_state',
        )
  return cases


_CASES = _cases()


class _Problem:
  """A step of an optimizer on a small smooth objective, with its state."""

  def __init__(self, opt, dtype, structure, value_dtype, grad_fn):
    dtype = jnp.dtype(dtype)
    x = jnp.asarray([1.5, -0.5, 2.0], dtype=dtype)
    if structure == 'array':
      self.params = x
    elif structure == 'tree':
      self.params = {'w': x, 'b': (x[:2], x[1:])}
    elif structure == 'mixed':
      # The first leaf, which sets the dtype of linesearch scalars, is float32.
      self.params = {'a': x, 'b': x[:2].astype(jnp.float64)}
    else:
      raise ValueError(structure)
    if value_dtype is None:
      leaf_dtypes = [
          jnp.real(leaf).dtype for leaf in jax.tree.leaves(self.params)
      ]
      value_dtype = max(leaf_dtypes, key=lambda d: d.itemsize)

    def value_fn(params):
      value = jnp.zeros((), value_dtype)
      for leaf in jax.tree.leaves(params):
        sq = jnp.real(leaf * jnp.conj(leaf))
        value = value + jnp.sum(sq + 0.25 * sq * sq).astype(value_dtype)
      return value

    self.opt = _get_optimizer(opt)
    if grad_fn == 'value_and_grad':
      self._value_and_grad = lambda params, state: jax.value_and_grad(value_fn)(
          params
      )
    else:
      value_and_grad = optax.value_and_grad_from_state(value_fn)
      self._value_and_grad = lambda params, state: value_and_grad(
          params, state=state
      )
    self.value_fn = value_fn
    self.state = self.opt.init(self.params)

  def step(self, carry):
    params, state = carry
    value, grad = self._value_and_grad(params, state)
    # Complex gradients are conjugated to give a descent direction.
    grad = jax.tree.map(jnp.conj, grad)
    updates, state = self.opt.update(
        grad, state, params, value=value, grad=grad, value_fn=self.value_fn
    )
    return optax.apply_updates(params, updates), state


def _types(fn, *args):
  """Structure, shapes, dtypes and weak types of fn(*args), only traced."""
  # Not jax.eval_shape: its ShapeDtypeStructs lack weak_type in jax 0.4.27.
  jaxpr, out = jax.make_jaxpr(fn, return_shape=True)(*args)
  return jax.tree.unflatten(
      jax.tree.structure(out),
      [(x.shape, jnp.dtype(x.dtype), x.weak_type) for x in jaxpr.out_avals],
  )


class LinesearchTypeStabilityTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CASES)
  def test_dtypes_stable_in_scan(self, opt, x64, **kwargs):
    """Seed of https://github.com/google-deepmind/optax/issues/1210."""
    with _x64_precision(x64):
      problem = _Problem(opt, **kwargs)
      (_, state), _ = jax.lax.scan(
          lambda carry, _: (problem.step(carry), None),
          (problem.params, problem.state),
          length=3,
      )
      dtypes = jax.tree.map(lambda x: jnp.dtype(x.dtype), state)
      self.assertEqual(
          jax.tree.map(lambda x: jnp.dtype(x.dtype), problem.state), dtypes
      )

  @parameterized.named_parameters(*_CASES)
  def test_update_returns_types_of_state(self, opt, x64, **kwargs):
    """Shapes, dtypes and weak types, see optax issues #1207, #1108."""
    with _x64_precision(x64):
      problem = _Problem(opt, **kwargs)
      new_state = _types(
          lambda c: problem.step(c)[1], (problem.params, problem.state)
      )
      self.assertEqual(_types(lambda: problem.state), new_state)

  @parameterized.named_parameters(*_CASES)
  def test_jitted_step_compiles_once(self, opt, x64, **kwargs):
    """A jitted step is traced once, see optax issues #1207, #1108."""
    with _x64_precision(x64):
      problem = _Problem(opt, **kwargs)
      num_traces = 0

      @jax.jit
      def step(params, state):
        nonlocal num_traces
        num_traces += 1
        return problem.step((params, state))

      params, state = problem.params, problem.state
      for _ in range(3):
        params, state = step(params, state)
      jax.block_until_ready(params)
      self.assertEqual(num_traces, 1)

  @parameterized.named_parameters(*_CASES)
  def test_step_in_while_loop_and_cond(self, opt, x64, **kwargs):
    """Loop carries and cond branches must have the types of the state."""
    # Type mismatches in carries and branches are raised while tracing, so the
    # loops are only traced.
    with _x64_precision(x64):
      problem = _Problem(opt, **kwargs)
      init = (problem.params, problem.state)
      types = _types(lambda: init)
      with self.subTest('while_loop'):
        out = _types(
            lambda carry: jax.lax.while_loop(
                lambda c: c[0] < 3,
                lambda c: (c[0] + 1, problem.step(c[1])),
                (0, carry),
            )[1],
            init,
        )
        self.assertEqual(types, out)
      with self.subTest('cond'):
        out = _types(
            lambda pred, carry: jax.lax.cond(
                pred, problem.step, lambda c: c, carry
            ),
            True,
            init,
        )
        self.assertEqual(types, out)


if __name__ == '__main__':
  absltest.main()
