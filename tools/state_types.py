"""Sweep: does `update` return an optimizer state of the types of its input?

For every public optimizer of the installed optax (functions of `optax` and
`optax.contrib` that build a GradientTransformation from default arguments,
with learning_rate=0.1), parameter dtype, x64 on/off and configuration, compare
leaf by leaf the state of `init` with the state of one `update`, both from
jax.eval_shape (nothing is compiled): shape, dtype and weak_type.

  python tools/state_types.py [--strict] [--only NAME[,NAME]] [--config C[,C]]

Prints the unstable (optimizer, configuration, leaf, before -> after) and a
summary. Exits 0 whatever it finds, unless --strict (then 1 if any unstable).
Uses optax's public API only; runs on optax 0.2.3 and later.
"""
import argparse
import inspect
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import optax

DTYPES = ('float16', 'bfloat16', 'float32', 'float64', 'complex64')
_MASK = {'w': True, 'b': False}


def _builders():
  """Yields (name, factory, kwargs) for each public optimizer."""
  for mod in (optax, getattr(optax, 'contrib', None)):
    for name in sorted(dir(mod) if mod else ()):
      fn = getattr(mod, name)
      if name.startswith('_') or not inspect.isfunction(fn):
        continue
      try:
        sig = inspect.signature(fn).parameters
      except (TypeError, ValueError):
        continue
      kwargs = {'learning_rate': 0.1} if 'learning_rate' in sig else {}
      if any(p.default is p.empty and p.name not in kwargs
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
             for p in sig.values()):
        continue
      try:
        tx = fn(**kwargs)
      except Exception:  # pylint: disable=broad-except
        continue
      if isinstance(tx, optax.GradientTransformation):
        yield mod.__name__.replace('optax.', '') + '.' + name, fn, kwargs


def _schedule():
  return optax.linear_schedule(0.1, 0.01, 100)


# configuration -> (build(fn, kwargs), params kind, value of another dtype)
def _inject(fn, kw, sched=False):
  kw = dict(kw, learning_rate=_schedule()) if sched else kw
  return optax.inject_hyperparams(fn)(**kw)


_WRAP = {
    'plain': lambda fn, kw: fn(**kw),
    'value_dtype': lambda fn, kw: fn(**kw),
    'schedule': lambda fn, kw: fn(**dict(kw, learning_rate=_schedule())),
    'inject': _inject,
    'inject_schedule': lambda fn, kw: _inject(fn, kw, sched=True),
    'multisteps': lambda fn, kw: optax.MultiSteps(
        fn(**kw), every_k_schedule=2).gradient_transformation(),
    'masked': lambda fn, kw: optax.masked(fn(**kw), _MASK),
    'chain_masked': lambda fn, kw: optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(1e-4, mask=_MASK), fn(**kw)),
    'int_mix': lambda fn, kw: optax.masked(
        fn(**kw), {'w': True, 'b': True, 'n': False}),
    'complex_mix': lambda fn, kw: fn(**kw),
    'apply_if_finite': lambda fn, kw: optax.apply_if_finite(fn(**kw), 3),
    'flatten': lambda fn, kw: optax.flatten(fn(**kw)),
    'multi_transform': lambda fn, kw: optax.multi_transform(
        {'a': fn(**kw), 'b': optax.sgd(0.1)}, {'w': 'a', 'b': 'b'}),
    'conditionally_mask': lambda fn, kw: optax.transforms.conditionally_mask(
        fn(**kw), lambda step: step % 2 == 0),
}
CONFIGS = tuple(_WRAP)


def _leaves(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): v for k, v in flat}


def _aval(x):
  return f'{x.dtype}{list(x.shape)}' + ('~weak' if x.weak_type else '')


def check(name, fn, kw, config, dtype):
  """Returns [(leaf, before, after)] of differing leaves, or raises."""
  dtype = jnp.dtype(dtype)
  real = jnp.finfo(dtype).dtype
  spec = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, jnp.dtype(dt))
  params = {'w': spec((2, 3)), 'b': spec((3,))}
  if config == 'complex_mix':
    params['b'] = spec((3,), 'complex64')
  if config == 'int_mix':
    params['n'] = spec((3,), 'int32')
  value = spec((), real)
  if config == 'value_dtype':
    value = spec((), 'bfloat16' if real == jnp.float16 else 'float16')
  tx = _WRAP[config](fn, kw)
  if config == 'value_dtype' and not isinstance(
      tx, optax.GradientTransformationExtraArgs):
    raise NotImplementedError('takes no value')  # same as plain

  def value_fn(p):
    leaves = [x for x in jax.tree_util.tree_leaves(p)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return sum(jnp.sum(jnp.abs(x) ** 2).astype(real) for x in leaves)

  def step(params, state, value):
    updates = jax.tree_util.tree_map(jnp.zeros_like, params)
    if isinstance(tx, optax.GradientTransformationExtraArgs):
      if 'sophia' in name or 'hutchinson' in name:
        extra = dict(obj_fn=value_fn)
      else:
        extra = dict(value=value, grad=updates, value_fn=value_fn)
      return tx.update(updates, state, params, **extra)[1]
    return tx.update(updates, state, params)[1]

  before = jax.eval_shape(tx.init, params)
  after = jax.eval_shape(step, params, before, value)
  b, a = _leaves(before), _leaves(after)
  if set(b) != set(a):
    return [('<structure>', ' '.join(sorted(b)), ' '.join(sorted(a)))]
  return [(k, _aval(b[k]), _aval(a[k])) for k in b
          if (b[k].shape, b[k].dtype, b[k].weak_type)
          != (a[k].shape, a[k].dtype, a[k].weak_type)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--strict', action='store_true',
                      help='exit 1 if any state is unstable')
  parser.add_argument('--only', help='comma-separated optimizer names')
  parser.add_argument('--config', help='comma-separated configurations, '
                      'among: ' + ' '.join(CONFIGS))
  parser.add_argument('--errors', action='store_true',
                      help='also list the cases that cannot be built or run')
  args = parser.parse_args(argv)
  only = set(args.only.split(',')) if args.only else None
  configs = args.config.split(',') if args.config else CONFIGS
  warnings.simplefilter('ignore')
  start, rows, errors, checked = time.time(), [], [], 0
  builders = [b for b in _builders() if not only or b[0] in only
              or b[0].split('.')[-1] in only]
  for x64 in (False, True):
    jax.config.update('jax_enable_x64', x64)
    for config in configs:
      if config not in _WRAP or (
          config == 'conditionally_mask' and not hasattr(optax, 'transforms')):
        continue
      for name, fn, kw in builders:
        needs_lr = config in ('schedule', 'inject_schedule')
        if needs_lr and 'learning_rate' not in kw:
          continue
        for dtype in DTYPES:
          if dtype == 'float64' and not x64:
            continue
          if config == 'complex_mix' and dtype == 'complex64':
            continue
          label = f'{config} x64={"on" if x64 else "off"} {dtype}'
          try:
            diffs = check(name, fn, kw, config, dtype)
          except NotImplementedError:
            continue
          except Exception as e:  # pylint: disable=broad-except
            errors.append((name, label, type(e).__name__))
            continue
          checked += 1
          rows += [(name, label) + d for d in diffs]
  jax.config.update('jax_enable_x64', False)
  print(f'# optax {optax.__version__}, jax {jax.__version__}: '
        f'{len(builders)} optimizers, {checked} cases checked, '
        f'{len(errors)} cannot run, {len(rows)} unstable leaves '
        f'({time.time() - start:.0f} s)')
  if rows:
    print('| optimizer | configuration | leaf | before -> after |')
    print('|---|---|---|---|')
    for name, label, leaf, b, a in rows:
      print(f'| {name} | {label} | `{leaf}` | {b} -> {a} |')
  if args.errors:
    for name, label, err in errors:
      print(f'cannot run: {name} {label}: {err}')
  return 1 if args.strict and rows else 0


if __name__ == '__main__':
  sys.exit(main())
