"""Patched optax gives bit-identical iterates to unpatched optax.

Builds a pristine and a patched overlay of optax releases from its PyPI
wheel (tools/overlay.sh) and runs tests/numerics_run.py under each. The
releases are $OPTAX_VERSION, else the newest release of each series folder of
patches/targets.tsv; configurations where the unpatched release crashes (the
bugs the series fixes) are not compared, and the patched one must run them
all. A release pinned to another jax in targets.tsv is skipped here:
tools/release_matrix.sh runs this test for every release under its own jax.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _targets():
  """{release: (series folder, jax pin or "")} from targets.tsv, in order."""
  targets = {}
  for line in (REPO / "patches" / "targets.tsv").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      version, folder, jax_pin = (line.split("\t") + [""])[:3]
      targets[version] = (REPO / "patches" / folder, jax_pin.strip())
  return targets


def _overlay(version, dest, series=None):
  cmd = ["bash", str(REPO / "tools" / "overlay.sh"), version, str(dest)]
  if series is not None:
    cmd.append(str(series))
  env = dict(os.environ, PYTHON=sys.executable)
  subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
  return dest


def _run_both(pristine, patched, tmp_path):
  """numerics_run.py under both overlays, concurrently: their results."""
  procs = []
  for overlay in (pristine, patched):
    env = dict(os.environ, PYTHONPATH=str(overlay), JAX_PLATFORMS="cpu")
    out = tmp_path / f"{overlay.name}.npz"
    cmd = [sys.executable, str(REPO / "tests" / "numerics_run.py"), str(out)]
    procs.append((subprocess.Popen(cmd, env=env, cwd=str(overlay)), out))
  codes = [proc.wait() for proc, _ in procs]
  assert codes == [0, 0], codes
  return [dict(np.load(out)) for _, out in procs]


def _versions():
  """$OPTAX_VERSION, else the newest release of each series folder."""
  if "OPTAX_VERSION" in os.environ:
    return [os.environ["OPTAX_VERSION"]]
  newest = {}
  for version, (folder, _) in _targets().items():
    newest[folder] = version  # rows are in release order
  return sorted(newest.values())


@pytest.mark.parametrize("version", _versions())
def test_patched_iterates_are_bit_identical(tmp_path, version):
  targets = _targets()
  if version not in targets:
    pytest.fail(f"optax {version} is not in patches/targets.tsv")
  series, jax_pin = targets[version]
  if jax_pin and jax_pin != jax.__version__:
    pytest.skip(f"optax {version} needs jax {jax_pin} (patches/targets.tsv), "
                f"this is jax {jax.__version__}: tools/release_matrix.sh "
                "runs it under that jax")
  pristine, patched = _run_both(
      _overlay(version, tmp_path / "pristine"),
      _overlay(version, tmp_path / "patched", series),
      tmp_path,
  )
  errors = {k: str(v) for k, v in patched.items() if k.endswith("/error")}
  assert not errors, errors
  # Unpatched old releases crash in some configurations: compare the others.
  crashed = {k[: -len("/error")] for k in pristine if k.endswith("/error")}
  compared = sorted(k for k in pristine if k.rsplit("/", 1)[0] not in crashed)
  assert compared == sorted(
      k for k in patched if k.rsplit("/", 1)[0] not in crashed
  )
  assert len(compared) >= 30, compared
  different = [
      key for key in compared
      if pristine[key].dtype != patched[key].dtype
      or pristine[key].tobytes() != patched[key].tobytes()
  ]
  assert not different, different
  # The runs did optimize: guards against comparing two empty or stuck runs.
  moved = [k for k in compared if k.endswith("/params")
           and not np.array_equal(pristine[k][0], pristine[k][-1])]
  assert len(moved) >= 15, moved
