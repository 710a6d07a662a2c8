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
"""L-BFGS and its linesearches under strict dtype promotion.

Under ``jax.numpy_dtype_promotion('strict')``, arrays of different dtypes do
not promote implicitly. L-BFGS mixed them, e.g. float32 parameters with its
float64 ``weights_memory`` or with float64 stepsizes of the zoom linesearch
under ``jax_enable_x64``, and int32 counters with int64 indices. It must run
under strict promotion and give there the iterates of standard promotion.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import _helpers

def _before_0_2_5():
  return tuple(int(n) for n in optax.__version__.split('.')[:3]) < (0, 2, 5)


def _rosenbrock(params):
  """Rosenbrock function of all the entries, of the real dtype of params."""
  x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
  if jnp.iscomplexobj(x):
    x = jnp.concatenate([x.real, x.imag])
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _init_params(dtype, structure):
  values = [-1.2, 1.0, -0.5, 0.8]
  if structure == 'array':
    return jnp.asarray(values, dtype)
  return {
      'a': jnp.asarray(values[:2], dtype),
      'b': (jnp.asarray(values[2:3], dtype), jnp.asarray(values[3], dtype)),
  }


def _run(dtype, linesearch, from_state, structure, num_steps=5):
  """Iterates and final state of a few jitted steps of L-BFGS."""
  opt = _helpers.lbfgs(linesearch)
  step = jax.jit(_helpers.lbfgs_step(opt, _rosenbrock, from_state))
  params = _init_params(dtype, structure)
  state = opt.init(params)
  iterates = []
  for _ in range(num_steps):
    params, state = step(params, state)
    iterates.append(params)
  return iterates, state


class LbfgsStrictPromotionTest(parameterized.TestCase):

  def _assert_same_as_standard(self, x64, *args):
    """Iterates of _run(*args) under strict promotion, as under standard."""
    dtype = args[0]
    if jnp.issubdtype(dtype, jnp.complexfloating) and _before_0_2_5():
      self.skipTest(
          f'optax {optax.__version__}: L-BFGS mixes complex curvature pairs'
          ' with real ones (before its complex fixes of 0.2.5); not cast'
      )
    with _helpers.x64_precision(x64):
      with jax.numpy_dtype_promotion('standard'):
        expected, expected_state = _run(*args)
      with jax.numpy_dtype_promotion('strict'):
        iterates, state = _run(*args)
    # Explicit casts must give bit for bit the iterates of standard promotion,
    # in the same dtypes.
    for step, (got, want) in enumerate(zip(iterates, expected)):
      for got_leaf, want_leaf in zip(
          jax.tree.leaves(got), jax.tree.leaves(want)
      ):
        self.assertEqual(got_leaf.dtype, jnp.dtype(dtype))
        self.assertEqual(got_leaf.dtype, want_leaf.dtype)
        self.assertEqual(
            np.asarray(got_leaf).tobytes(),
            np.asarray(want_leaf).tobytes(),
            msg=f'iterate {step}: {got_leaf} != {want_leaf}',
        )
    self.assertEqual(
        jax.tree.map(lambda x: x.dtype, state),
        jax.tree.map(lambda x: x.dtype, expected_state),
    )

  @parameterized.product(
      _helpers.X64_DTYPES,
      (*_helpers.LBFGS_STEPS, {'linesearch': 'none', 'from_state': False}),
      structure=('array', 'tree'),
  )
  def test_strict_promotion(
      self, x64, dtype, linesearch, from_state, structure
  ):
    """L-BFGS runs under strict dtype promotion, with standard iterates.

    Strict dtype promotion: with x64, float32 parameters met the float64
    weights_memory of scale_by_lbfgs and float64 stepsizes in the zoom
    linesearch; float64 parameters met int64 indices with the int32 count.

    Args:
      x64: whether jax_enable_x64 is on.
      dtype: dtype of the parameters.
      linesearch: name of the linesearch.
      from_state: whether the gradient comes from
        ``optax.value_and_grad_from_state``.
      structure: ``array`` or ``tree`` (nested pytree of one dtype).
    """
    self._assert_same_as_standard(
        x64, dtype, linesearch, from_state, structure
    )

  @parameterized.product(
      (
          {'x64': False, 'dtype': 'float16'},
          {'x64': False, 'dtype': 'bfloat16'},
          {'x64': False, 'dtype': 'complex64'},
          {'x64': True, 'dtype': 'complex128'},
      ),
      linesearch=('zoom', 'backtracking_store_grad'),
  )
  def test_strict_promotion_other_dtypes(self, x64, dtype, linesearch):
    """Strict dtype promotion with low precision or complex parameters.

    Strict dtype promotion: float16 and bfloat16 parameters met float32
    weights, complex parameters met real stepsizes and weights.

    Args:
      x64: whether jax_enable_x64 is on.
      dtype: dtype of the parameters.
      linesearch: name of the linesearch.
    """
    self._assert_same_as_standard(x64, dtype, linesearch, True, 'array')

  @parameterized.product((
      {'x64': True, 'dtype': 'float64'},
      {'x64': True, 'dtype': 'complex128'},
      {'x64': False, 'dtype': 'float16'},
  ))
  def test_strict_promotion_zoom_verbose(self, x64, dtype):
    """The failure diagnostics of the zoom linesearch, under strict promotion.

    Strict dtype promotion: with verbose=True, the zoom linesearch compared
    its stepsize with the float32 machine epsilon, for stepsizes of any dtype.

    Args:
      x64: whether jax_enable_x64 is on.
      dtype: dtype of the parameters.
    """
    self._assert_same_as_standard(x64, dtype, 'zoom_verbose', False, 'array')

  @parameterized.product((
      {'dtype': 'float64', 'store_grad': False},
      {'dtype': 'float32', 'store_grad': True},
  ))
  def test_strict_promotion_backtracking_none_params(self, dtype, store_grad):
    """None parameters stay None, as with optax.tree.add_scale.

    The trial parameters of the backtracking linesearch are params + stepsize
    * updates, None where params are None (as optax.apply_updates accepts),
    also where the updates are not None.

    Args:
      dtype: dtype of the parameters.
      store_grad: whether the linesearch stores the gradient.
    """

    def value_fn(params):
      return _rosenbrock(params['w'])

    def run():
      opt = optax.scale_by_backtracking_linesearch(
          max_backtracking_steps=15, store_grad=store_grad
      )

      @jax.jit
      def step(params, state):
        value, grad = jax.value_and_grad(value_fn)(params)
        # Zeros for the None parameter, that optax.apply_updates ignores.
        grad = {'w': grad['w'], 'frozen': jnp.zeros(2, dtype)}
        updates = jax.tree.map(lambda g: -0.01 * g, grad)
        updates, state = opt.update(
            updates, state, params, value=value, grad=grad, value_fn=value_fn
        )
        return optax.apply_updates(params, updates), state

      params = {'w': jnp.asarray([-1.2, 1.0, -0.5], dtype), 'frozen': None}
      state = opt.init(params)
      iterates = []
      for _ in range(3):
        params, state = step(params, state)
        iterates.append(params)
      return iterates

    with _helpers.x64_precision(True):
      with jax.numpy_dtype_promotion('standard'):
        try:
          expected = run()
        except ValueError:  # optax 0.2.3's tree_add_scalar_mul maps over None
          self.skipTest('this optax takes no None parameters, in any mode')
      with jax.numpy_dtype_promotion('strict'):
        iterates = run()
    for got, want in zip(iterates, expected):
      self.assertIsNone(got['frozen'])
      self.assertEqual(got['w'].dtype, jnp.dtype(dtype))
      self.assertEqual(
          np.asarray(got['w']).tobytes(), np.asarray(want['w']).tobytes()
      )


if __name__ == '__main__':
  absltest.main()
