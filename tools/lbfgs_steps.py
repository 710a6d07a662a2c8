"""Runs N jitted L-BFGS (or linesearch) steps; reports what they did.

tools/checks.py, tools/bench.py and matrix/test_numerics.py describe a run as
a Config; run() imports optax (PYTHONPATH picks which) and returns a Result.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np


def _quadratic(x):
  scales = jnp.logspace(0, 4, x.shape[0], dtype=x.dtype)
  return 0.5 * jnp.sum(scales * x**2) + jnp.sum(jnp.sin(x))


def _zakharov(x):
  s = jnp.sum(0.5 * jnp.arange(1, x.shape[0] + 1, dtype=x.dtype) * x)
  return jnp.sum(x**2) + s**2 + s**4


# name: (function, x0 = linspace(low, high, size), default size)
OBJECTIVES = {
    "sphere": (lambda x: jnp.sum(x**2), 1.0, 3.0, 3),
    "rosenbrock": (lambda x: jnp.sum(100.0 * (x[1:] - x[:-1]**2)**2
                                     + (1.0 - x[:-1])**2), -1.2, 1.0, 10),
    "quadratic": (_quadratic, -3.0, 3.0, 50),  # ill-conditioned
    "zakharov": (_zakharov, 0.5, 1.5, 5),
}


@dataclasses.dataclass(frozen=True)
class Config:
  optimizer: str = "lbfgs"      # lbfgs | sgd (sgd(1e-3), then the linesearch)
  linesearch: str = "default"   # default (lbfgs()'s own) | zoom | backtracking
  ls_steps: int = 15            # max steps of a zoom/backtracking linesearch
  store_grad: bool = False      # backtracking's store_grad
  x64: bool = False             # jax_enable_x64 during the run
  dtype: str = "float32"        # of the params
  objective: str = "sphere"     # a key of OBJECTIVES
  size: int = 0                 # of the params; 0: the objective's default
  loss_dtype: str = ""          # cast the loss to this dtype ("": as computed)
  from_state: bool = False      # optax.value_and_grad_from_state, not jax's
  strict: bool = False          # under jax.numpy_dtype_promotion("strict")
  cast_back: bool = False       # workaround: new state cast to the old dtypes
  steps: int = 5
  scan: bool = False            # all steps in one jitted lax.scan


@dataclasses.dataclass
class Result:
  compilations: int   # traces of the jitted step (1 = compiled once)
  params: np.ndarray  # iterate after each step, shape (steps, size)
  values: np.ndarray  # objective at each step's input, shape (steps,)
  seconds: list       # wall time per call, compilation included (scan: 1)
  state: list         # final state leaves (numpy)
  type_changes: list  # "path: int32[]~weak -> int32[]" per changed leaf
  dtype_changes: list  # "path: int64 -> int32" per leaf of another dtype


def types(tree):
  """{leaf path: 'dtype[shape]', '~weak' if weakly typed} of arrays or
  ShapeDtypeStructs. The one jax compatibility shim: 0.4.27 has no typeof."""
  typeof = getattr(jax, "typeof", None) or jax.core.get_aval
  return {jax.tree_util.keystr(k): f"{a.dtype}{list(a.shape)}"
          + ("~weak" if a.weak_type else "") for k, a in (
              (k, x if isinstance(x, jax.ShapeDtypeStruct) else typeof(x))
              for k, x in jax.tree_util.tree_flatten_with_path(tree)[0])}


def run(cfg):
  """Runs cfg.steps steps as cfg says; returns a Result. Raises what it does."""
  previous = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", cfg.x64)
  try:
    with jax.numpy_dtype_promotion("strict" if cfg.strict else "standard"):
      return _run(cfg)
  finally:
    jax.config.update("jax_enable_x64", previous)


def _run(cfg):
  import optax  # pylint: disable=g-import-not-at-top
  fn, low, high, size = OBJECTIVES[cfg.objective]
  if cfg.loss_dtype:
    fn = lambda x, f=fn: f(x).astype(cfg.loss_dtype)
  params = jnp.linspace(low, high, cfg.size or size, dtype=cfg.dtype)
  ls = {"default": lambda: None,
        "zoom": lambda: optax.scale_by_zoom_linesearch(cfg.ls_steps),
        "backtracking": lambda: optax.scale_by_backtracking_linesearch(
            cfg.ls_steps, store_grad=cfg.store_grad)}[cfg.linesearch]()
  opt = (optax.chain(optax.sgd(1e-3), ls) if cfg.optimizer == "sgd"
         else optax.lbfgs() if ls is None else optax.lbfgs(linesearch=ls))
  traces = 0

  def step(params, state):
    nonlocal traces
    traces += 1
    value, grad = (optax.value_and_grad_from_state(fn)(params, state=state)
                   if cfg.from_state else jax.value_and_grad(fn)(params))
    updates, new_state = opt.update(
        grad, state, params, value=value, grad=grad, value_fn=fn)
    if cfg.cast_back:
      new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, state)
    return optax.apply_updates(params, updates), new_state, value

  def scan(params, state):  # all steps in one program
    def body(carry, _):
      params, state, value = step(*carry)
      return (params, state), (params, value)
    (params, state), ys = jax.lax.scan(body, (params, state), length=cfg.steps)
    return params, state, ys

  state = opt.init(params)
  before, seconds, ys = types(state), [], []
  jitted = jax.jit(scan if cfg.scan else step)
  for _ in range(1 if cfg.scan else cfg.steps):
    t0 = time.perf_counter()
    params, state, y = jax.block_until_ready(jitted(params, state))
    seconds.append(time.perf_counter() - t0)
    ys.append(y if cfg.scan else (params, y))
  iterates, values = ys[0] if cfg.scan else map(jnp.stack, zip(*ys))
  after = types(state)
  changes = [(path, old, after.get(path)) for path, old in before.items()
             if after.get(path) != old]
  dtype = lambda t: t and t.split("[")[0]  # of "int32[]~weak": int32
  return Result(
      compilations=traces, params=np.asarray(iterates),
      values=np.asarray(values), seconds=seconds,
      state=[np.asarray(x) for x in jax.tree.leaves(state)],
      type_changes=[f"{path}: {old} -> {new}" for path, old, new in changes],
      # lax.scan runs with a weak type that changes, not with a dtype (#1210)
      dtype_changes=[f"{path}: {dtype(old)} -> {dtype(new)}"
                     for path, old, new in changes if dtype(old) != dtype(new)])

