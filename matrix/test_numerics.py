"""Patched optax gives bit-identical iterates and final state to unpatched.

For the optax release $OPTAX_VERSION (default: the installed optax's
version), builds a pristine and a patched overlay from the release's PyPI
wheel (tools/series.py) and runs the same jitted steps under each
(tools/lbfgs_steps.py; this file run with PYTHONPATH=<overlay>:tools): L-BFGS
with its default zoom linesearch, with backtracking (store_grad off and on),
and sgd followed by the zoom linesearch alone, each under x32/float32,
x64/float64 and x64/float32, on three problems (a Latin square: every
optimizer meets every problem and every dtype, in 12 runs, not 36: each run
is a compilation, and the release matrix runs this test once per release).
Runs where the pristine release crashes (the bugs its series fixes) are not
compared; the patched one must run them all. Skipped if the jax is newer
than the release's pin in patches/targets.tsv: matrix/test_releases.py runs
this test for every release with each jax of the support matrix.
"""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve()
REPO = HERE.parents[1]
import series  # pylint: disable=g-import-not-at-top,wrong-import-position

VERSION = os.environ.get("OPTAX_VERSION") or importlib.metadata.version("optax")
STEPS = 30
DTYPES = ({"x64": False, "dtype": "float32"}, {"x64": True, "dtype": "float64"},
          {"x64": True, "dtype": "float32"})
OPTIMIZERS = {
    "lbfgs": dict(from_state=True),
    "lbfgs_backtracking": dict(linesearch="backtracking", ls_steps=20),
    "lbfgs_backtracking_store_grad": dict(
        linesearch="backtracking", ls_steps=20, store_grad=True,
        from_state=True),
    "sgd_zoom": dict(optimizer="sgd", linesearch="zoom", ls_steps=20),
}
PROBLEMS = ("rosenbrock", "quadratic", "zakharov")
CONFIGS = {
    f"{'x64' if d['x64'] else 'x32'}/{d['dtype']}/{PROBLEMS[(i + j) % 3]}/"
    f"{name}": dict(d, objective=PROBLEMS[(i + j) % 3], steps=STEPS, **fields)
    for i, d in enumerate(DTYPES)
    for j, (name, fields) in enumerate(OPTIMIZERS.items())
}


def _harness(out):
  """Runs CONFIGS in this process's optax; OUT.npz gets, per config NAME,
  NAME/params, NAME/values, NAME/compilations, NAME/state<i> (one per state
  leaf), or NAME/error if the run raised (an unpatched optax's bug)."""
  import lbfgs_steps  # pylint: disable=g-import-not-at-top
  arrays = {}
  for name, fields in CONFIGS.items():
    try:
      result = lbfgs_steps.run(lbfgs_steps.Config(**fields))
    except Exception as e:  # pylint: disable=broad-except
      arrays[f"{name}/error"] = np.asarray(f"{type(e).__name__}: {e}"[:300])
      continue
    arrays.update({f"{name}/params": result.params,
                   f"{name}/values": result.values,
                   f"{name}/compilations": np.asarray(result.compilations)})
    arrays.update({f"{name}/state{i}": x for i, x in enumerate(result.state)})
  np.savez(out, **arrays)


def _run_both(tmp_path):
  """_harness under a pristine and a patched overlay, concurrently."""
  procs = []
  for name, folder in (("pristine", None),
                       ("patched", series.target(VERSION).folder)):
    overlay = series.overlay(VERSION, tmp_path / name, folder)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        [str(overlay), str(REPO / "tools")]))
    out = tmp_path / f"{name}.npz"
    procs.append((subprocess.Popen([sys.executable, str(HERE), str(out)],
                                   env=env, cwd=tmp_path), out))
  assert [proc.wait() for proc, _ in procs] == [0, 0]
  return [dict(np.load(out)) for _, out in procs]


def same(key, a, b):
  """Iterates and values: same dtype and bytes. State leaves: same values
  (the 0.2.3 and 0.2.4 series fix state dtypes, as optax 0.2.5 did)."""
  if "/state" in key:
    a, b = a.astype(np.float64), b.astype(np.float64)
  return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_patched_iterates_and_state_are_bit_identical(tmp_path):
  pin = series.target(VERSION).jax_pin
  jax = importlib.metadata.version("jax")
  if pin and series.version_key(jax) > series.version_key(pin):
    pytest.skip(f"optax {VERSION} runs with jax <= {pin}, not {jax} "
                "(patches/targets.tsv): matrix/test_releases.py runs it")
  pristine, patched = _run_both(tmp_path)
  errors = {k: str(v) for k, v in patched.items() if k.endswith("/error")}
  assert not errors, errors
  compared = [c for c in CONFIGS if f"{c}/error" not in pristine]
  assert len(compared) >= len(CONFIGS) // 2, sorted(pristine)
  for config in compared:
    keys = sorted(k for k in pristine if k.startswith(f"{config}/")
                  and k != f"{config}/compilations")  # the bug: 2 vs 1
    assert keys == sorted(k for k in patched if k.startswith(f"{config}/")
                          and k != f"{config}/compilations")
    different = [k for k in keys if not same(k, pristine[k], patched[k])]
    assert not different, different
    # The runs did optimize: guards against comparing two stuck runs.
    params = pristine[f"{config}/params"]
    assert params.shape[0] == STEPS and not np.array_equal(params[0],
                                                            params[-1]), config


if __name__ == "__main__":  # the subprocess of _run_both
  _harness(sys.argv[1])
