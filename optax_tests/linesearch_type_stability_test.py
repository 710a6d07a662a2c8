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

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

import _helpers


def _problem(x64, dtype, structure='array', value_dtype=None):
  """Parameters (dtype, structure) and objective (dtype), x64 off or on.

  Args:
    x64: whether jax_enable_x64 is on.
    dtype: dtype of the parameters.
    structure: ``array``, ``tree`` (nested pytree of one dtype) or ``mixed``
      (float32 and float64 leaves; the first, float32, sets the dtype of the
      linesearch scalars).
    value_dtype: dtype of the objective; None: the widest real dtype of the
      parameters.

  Returns:
    The keyword arguments of a test case.
  """
  return {
      'x64': x64,
      'dtype': dtype,
      'structure': structure,
      'value_dtype': value_dtype,
  }


# Every float and complex dtype, without and with x64; pytrees, and
# objectives of another dtype than the parameters, for float32 and float64.
_DTYPES = ('float16', 'bfloat16', 'float32', 'complex64')
_PROBLEMS = (
    *(_problem(False, dtype) for dtype in _DTYPES),
    *(_problem(True, dtype) for dtype in _DTYPES + ('float64', 'complex128')),
    *(_problem(**p, structure='tree') for p in _helpers.X64_DTYPES),
    _problem(True, 'float32', structure='mixed'),
    _problem(False, 'float32', value_dtype='float16'),
    _problem(True, 'float32', value_dtype='float64'),
)


class _Problem:
  """A step of L-BFGS on a small smooth objective, with its first state."""

  def __init__(self, linesearch, from_state, dtype, structure, value_dtype):
    dtype = jnp.dtype(dtype)
    x = jnp.asarray([1.5, -0.5, 2.0], dtype=dtype)
    if structure == 'array':
      self.params = x
    elif structure == 'tree':
      self.params = {'w': x, 'b': (x[:2], x[1:])}
    else:  # mixed
      self.params = {'a': x, 'b': x[:2].astype(jnp.float64)}
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

    opt = _helpers.lbfgs(linesearch)
    self.state = opt.init(self.params)
    self._step = _helpers.lbfgs_step(opt, value_fn, from_state)

  def step(self, carry):
    return self._step(*carry)


class LinesearchTypeStabilityTest(parameterized.TestCase):

  @parameterized.product(_PROBLEMS, _helpers.LBFGS_STEPS)
  def test_dtypes_stable_in_scan(self, x64, **kwargs):
    """Seed of https://github.com/google-deepmind/optax/issues/1210."""
    with _helpers.x64_precision(x64):
      problem = _Problem(**kwargs)
      (_, state), _ = jax.lax.scan(
          lambda carry, _: (problem.step(carry), None),
          (problem.params, problem.state),
          length=3,
      )
      dtypes = jax.tree.map(lambda x: jnp.dtype(x.dtype), state)
      # lax.scan silently promotes a weakly typed carry to the dtype the step
      # returns, which is how #1210 hides here: int64 -> int32 under x64.
      self.assertEqual(
          jax.tree.map(lambda x: jnp.dtype(x.dtype), problem.state), dtypes
      )

  @parameterized.product(_PROBLEMS, _helpers.LBFGS_STEPS)
  def test_update_returns_types_of_state(self, x64, **kwargs):
    """Shapes, dtypes and weak types, see optax issues #1207, #1108."""
    with _helpers.x64_precision(x64):
      problem = _Problem(**kwargs)
      new_state = _helpers.types(
          lambda c: problem.step(c)[1], (problem.params, problem.state)
      )
      self.assertEqual(_helpers.types(lambda: problem.state), new_state)

  @parameterized.product(_PROBLEMS, _helpers.LBFGS_STEPS)
  def test_jitted_step_compiles_once(self, x64, **kwargs):
    """A jitted step is traced once, see optax issues #1207, #1108."""
    with _helpers.x64_precision(x64):
      problem = _Problem(**kwargs)
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

  @parameterized.product(
      _PROBLEMS, _helpers.LBFGS_STEPS, control_flow=('while_loop', 'cond')
  )
  def test_step_in_while_loop_and_cond(self, x64, control_flow, **kwargs):
    """Loop carries and cond branches must have the types of the state."""
    # Type mismatches in carries and branches are raised while tracing, so the
    # loops are only traced.
    with _helpers.x64_precision(x64):
      problem = _Problem(**kwargs)
      init = (problem.params, problem.state)
      if control_flow == 'while_loop':
        out = _helpers.types(
            lambda carry: jax.lax.while_loop(
                lambda c: c[0] < 3,
                lambda c: (c[0] + 1, problem.step(c[1])),
                (0, carry),
            )[1],
            init,
        )
      else:
        out = _helpers.types(
            lambda pred, carry: jax.lax.cond(
                pred, problem.step, lambda c: c, carry
            ),
            True,
            init,
        )
      self.assertEqual(_helpers.types(lambda: init), out)


if __name__ == '__main__':
  absltest.main()
