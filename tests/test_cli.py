"""The command lines of tools/series.py, state_types.py and bench.py.

--help prints the usage and exits 0; an unknown command, option or value
exits 2 with one line on stderr and nothing on stdout.
"""

import os
import subprocess
import sys

import pytest

import series


def _run(tool, *args):
  return subprocess.run([sys.executable, str(series.REPO / "tools" / tool),
                         *args], capture_output=True, text=True, check=False,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("tool, flag", [
    ("series.py", "--help"), ("series.py", "-h"), ("state_types.py", "--help"),
    ("bench.py", "--help")])
def test_help_exits_0(tool, flag):
  proc = _run(tool, flag)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("usage:") and not proc.stderr


@pytest.mark.parametrize("tool, args", [
    ("series.py", []),
    ("series.py", ["--bogus"]),
    ("series.py", ["matrix", "extra"]),
    ("series.py", ["overlay", "0.2.8"]),
    ("series.py", ["overlay", "0.2.8", "dest", "--bogus"]),
    ("series.py", ["overlay", "9.9.9", "dest"]),
    ("state_types.py", ["--bogus"]),
    ("state_types.py", ["--config", "plain,unknown"]),
    ("state_types.py", ["--only", "no_such_optimizer", "--config", "plain"]),
    ("bench.py", ["--bogus"]),
    ("bench.py", ["--sizes", "10,x"]),
    ("bench.py", ["--optax-version", "9.9.9"]),
    ("bench.py", ["--only", "no_such_configuration"]),
])
def test_bad_usage_exits_2_with_one_line(tool, args):
  proc = _run(tool, *args)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert not proc.stdout
  assert len(proc.stderr.splitlines()) == 1, proc.stderr
  assert proc.stderr.startswith(f"{tool}: ")
