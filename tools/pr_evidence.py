#!/usr/bin/env python3
# Copyright 2026 optax-typestable contributors.
# SPDX-License-Identifier: Apache-2.0
"""Before/after evidence for PR.md, run with the optax under test.

usage: python tools/pr_evidence.py OUT.json

For each case (x64 off/on, lbfgs with its default zoom linesearch or with
the backtracking linesearch, on the Rosenbrock function), runs a jitted
L-BFGS step STEPS times and records:

* traces: how many times the jitted step was traced (1 = compiled once);
* iterates_sha256: sha256 of the raw bytes of the parameters and values after
  every step, so two runs are bit-identical iff the digests are equal.

tools/test_head.py runs this on the unpatched and on the patched optax.
"""

import hashlib
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 15


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def make_opt(linesearch):
  if linesearch == 'zoom':
    return optax.lbfgs()
  return optax.lbfgs(
      linesearch=optax.scale_by_backtracking_linesearch(
          max_backtracking_steps=20, store_grad=True
      )
  )


def run_case(x64, dtype, linesearch):
  jax.config.update('jax_enable_x64', x64)
  try:
    opt = make_opt(linesearch)
    params = jnp.asarray([-1.2, 1.0, -0.5, 0.8, 1.5], dtype=dtype)
    state = opt.init(params)
    value_and_grad = optax.value_and_grad_from_state(rosenbrock)
    traces = 0

    @jax.jit
    def step(params, state):
      nonlocal traces
      traces += 1
      value, grad = value_and_grad(params, state=state)
      updates, state = opt.update(
          grad, state, params, value=value, grad=grad, value_fn=rosenbrock
      )
      return optax.apply_updates(params, updates), state, value

    digest = hashlib.sha256()
    value = None
    for _ in range(STEPS):
      params, state, value = step(params, state)
      digest.update(np.asarray(params).tobytes())
      digest.update(np.asarray(value).tobytes())
    return {
        'traces': traces,
        'steps': STEPS,
        'iterates_sha256': digest.hexdigest(),
        'final_value': float(rosenbrock(params)),
        'dtype': str(params.dtype),
        'error': None,
    }
  except Exception as e:  # pylint: disable=broad-exception-caught
    return {
        'traces': None,
        'steps': STEPS,
        'iterates_sha256': '',
        'final_value': None,
        'dtype': dtype,
        'error': f'{type(e).__name__}: {str(e).splitlines()[0][:200]}',
    }
  finally:
    jax.config.update('jax_enable_x64', False)


def main():
  cases = {}
  for x64, dtype in ((False, 'float32'), (True, 'float32'), (True, 'float64')):
    for linesearch in ('zoom', 'backtracking'):
      name = f"{'x64' if x64 else 'x32'}_{dtype}_lbfgs_{linesearch}"
      cases[name] = run_case(x64, dtype, linesearch)
  out = {
      'optax': optax.__version__,
      'jax': jax.__version__,
      'cases': cases,
  }
  with open(sys.argv[1], 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=1)


if __name__ == '__main__':
  main()
