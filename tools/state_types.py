"""Sweep: does `update` return an optimizer state of the types of its input?

Every public optimizer of the installed optax (>= 0.2.3), per configuration,
parameter dtype and x64 off/on: the leaves (shape, dtype, weak_type) of the
states of `init` and of one `update`, from jax.eval_shape (a jax that gives
weak types: not 0.4.27). docs/state_types.md: configurations and findings.
"""
import argparse
import contextlib
import inspect
import itertools
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import optax

import lbfgs_steps

DTYPES = ('float16', 'bfloat16', 'float32', 'float64', 'complex64')
_MASK = {'w': True, 'b': False}


def _builders():
  """(name, factory, kwargs) of each public optimizer: the functions of optax
  and optax.contrib that build a GradientTransformation from kwargs."""
  for mod in (optax, optax.contrib):
    for name, fn in inspect.getmembers(mod, inspect.isfunction):
      with contextlib.suppress(Exception):  # those kwargs cannot build
        sig = inspect.signature(fn).parameters
        kwargs = {'learning_rate': 0.1} if 'learning_rate' in sig else {}
        if not name.startswith('_') and isinstance(
            fn(**kwargs), optax.GradientTransformation):
          yield mod.__name__.replace('optax.', '') + '.' + name, fn, kwargs


CONFIGS = {  # configuration -> wrapper of the optimizer; check() does the rest
    'plain': None, 'value_dtype': None, 'schedule': None, 'inject': None,
    'inject_schedule': None,
    'multisteps': lambda tx: optax.MultiSteps(
        tx, every_k_schedule=2).gradient_transformation(),
    'masked': lambda tx: optax.masked(tx, _MASK),
    'chain_masked': lambda tx: optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(1e-4, mask=_MASK), tx),
    'int_mix': lambda tx: optax.masked(tx, {'w': True, 'b': True, 'n': False}),
    'complex_mix': None,
    'apply_if_finite': lambda tx: optax.apply_if_finite(tx, 3),
    'flatten': optax.flatten,
    'multi_transform': lambda tx: optax.multi_transform(
        {'a': tx, 'b': optax.sgd(0.1)}, {'w': 'a', 'b': 'b'}),
    'conditionally_mask': lambda tx: optax.transforms.conditionally_mask(
        tx, lambda step: step % 2 == 0),
}


def check(name, fn, kw, config, dtype):
  """[(leaf, before, after)] of the leaves whose types differ; None if the
  case does not apply (it is not counted); raises if it cannot run."""
  if (dtype == 'float64' and not jax.config.read('jax_enable_x64')
      or config == 'complex_mix' and dtype == 'complex64'
      or config.endswith('schedule') and 'learning_rate' not in kw):
    return None
  dtype = jnp.dtype(dtype)
  real = jnp.finfo(dtype).dtype
  spec = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, jnp.dtype(dt))
  params = {'w': spec((2, 3)),
            'b': spec((3,), 'complex64' if config == 'complex_mix' else dtype)}
  if config == 'int_mix':
    params['n'] = spec((3,), 'int32')
  value = spec((), real)
  if config == 'value_dtype':
    value = spec((), 'bfloat16' if real == jnp.float16 else 'float16')
  if config.endswith('schedule'):  # schedule, inject_schedule
    kw = dict(kw, learning_rate=optax.linear_schedule(0.1, 0.01, 100))
  build = optax.inject_hyperparams(fn) if config.startswith('inject') else fn
  tx = build(**kw)
  if CONFIGS[config]:
    tx = CONFIGS[config](tx)
  extra_args = isinstance(tx, optax.GradientTransformationExtraArgs)
  if config == 'value_dtype' and not extra_args:
    return None  # takes no value: the same case as plain

  def value_fn(p):
    return sum(jnp.sum(jnp.abs(x) ** 2).astype(real)
               for x in jax.tree_util.tree_leaves(p)
               if jnp.issubdtype(x.dtype, jnp.inexact))

  def step(params, state, value):
    updates = jax.tree_util.tree_map(jnp.zeros_like, params)
    extra = dict(value=value, grad=updates, value_fn=value_fn)
    if 'sophia' in name or 'hutchinson' in name:
      extra = dict(obj_fn=value_fn)
    return tx.update(updates, state, params, **(extra if extra_args else {}))[1]

  before = jax.eval_shape(tx.init, params)
  b = lbfgs_steps.types(before)
  a = lbfgs_steps.types(jax.eval_shape(step, params, before, value))
  return [(k, b.get(k), a.get(k)) for k in dict.fromkeys([*b, *a])
          if b.get(k) != a.get(k)]  # None: no such leaf


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--strict', action='store_true',
                      help='exit 1 if any state is unstable')
  parser.add_argument('--only', help='comma-separated optimizer names')
  parser.add_argument('--config', help='comma-separated configurations, '
                      'among: ' + ' '.join(CONFIGS))
  parser.add_argument('--errors', action='store_true',
                      help='also list the cases that cannot be built or run')
  parser.error = lambda msg: parser.exit(2, f'state_types.py: {msg}\n')
  args = parser.parse_args(argv)
  if not hasattr(jax.eval_shape(lambda: 0.0), 'weak_type'):
    parser.error(f'jax {jax.__version__}: jax.eval_shape gives no weak types')
  warnings.simplefilter('ignore')
  builders = list(_builders())
  names = lambda b: {b[0], b[0].split('.')[-1]}  # optax.x or contrib.x, or x
  only = set(args.only.split(',')) if args.only else set()
  configs = args.config.split(',') if args.config else CONFIGS
  known = set().union(*map(names, builders))
  for flag, unknown in (('--only', only - known),
                        ('--config', set(configs) - set(CONFIGS))):
    if unknown:
      parser.error(f'unknown {flag} {",".join(sorted(unknown))}')
  builders = [b for b in builders if not only or names(b) & only]
  start, rows, errors, checked = time.time(), [], [], 0
  for x64 in (False, True):
    jax.config.update('jax_enable_x64', x64)
    for config, (name, fn, kw), dtype in itertools.product(
        configs, builders, DTYPES):
      label = f'{config} x64={"on" if x64 else "off"} {dtype}'
      try:
        changes = check(name, fn, kw, config, dtype)
      except Exception as e:  # pylint: disable=broad-except
        errors.append(f'cannot run: {name} {label}: {type(e).__name__}')
        continue
      checked += changes is not None
      rows += [f'| {name} | {label} | `{leaf}` | {b} -> {a} |'
               for leaf, b, a in changes or ()]
  jax.config.update('jax_enable_x64', False)
  print(f'# optax {optax.__version__}, jax {jax.__version__}: '
        f'{len(builders)} optimizers, {checked} cases checked, '
        f'{len(errors)} cannot run, {len(rows)} unstable leaves '
        f'({time.time() - start:.0f} s)')
  if rows:
    print('| optimizer | configuration | leaf | before -> after |')
    print('|---|---|---|---|')
  for line in rows + (errors if args.errors else []):
    print(line)
  return 1 if args.strict and rows else 0


if __name__ == '__main__':
  sys.exit(main())
