"""The issue-1210 program (tests/demo_1210.py) on optax 0.2.4.

Unpatched, LBFGS under x64 in `equinox.internal.scan(kind="checkpointed")`
fails; with patches/0.2.4 applied it runs 100 steps and reaches the optimum.
"""

import os
import pathlib
import subprocess
import sys

import series

VERSION = "0.2.4"


def _demo(tmp_path, name, patched):
  dest = series.overlay(VERSION, tmp_path / name,
                        series.target(VERSION).folder if patched else None)
  return subprocess.run(
      [sys.executable, str(pathlib.Path(__file__).with_name("demo_1210.py"))],
      capture_output=True, text=True, check=False, cwd=tmp_path,
      env=dict(os.environ, PYTHONPATH=str(dest), JAX_PLATFORMS="cpu"),
  )


def test_issue_1210_program_fails_unpatched_and_runs_patched(tmp_path):
  before = _demo(tmp_path, "pristine", patched=False)
  assert before.returncode == 1, before.stdout + before.stderr
  assert f"optax {VERSION}: FAILED" in before.stdout
  after = _demo(tmp_path, "patched", patched=True)
  assert after.returncode == 0, after.stdout + after.stderr
  assert "ran 100 steps" in after.stdout
  assert "reached the optimum" in after.stdout
