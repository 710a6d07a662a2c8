"""The issue-1210 program (examples/demo_1210.py) and the check named after it.

LBFGS under x64 in `equinox.internal.scan(kind="checkpointed")` fails on
optax 0.2.3 and 0.2.4 (the carry changes dtype) and runs on later releases.
On every release that runs with this jax, the program and the check
`seed-1210-scan-x64` of tools/checks.py give the same verdict, released and
patched, and both pass once patched.
"""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

import series

HERE = pathlib.Path(__file__).resolve().parent
CHECK = "seed-1210-scan-x64"
JAX = importlib.metadata.version("jax")
RELEASES = [t.release for t in series.targets() if not t.jax_pin
            or series.version_key(t.jax_pin) >= series.version_key(JAX)]
VERDICT = (  # the check's verdict: its first line PASS or FAIL
    "import sys, checks, lbfgs_steps\n"
    f"fields, verdict = checks.CHECKS[{CHECK!r}]\n"
    "passed, detail = verdict(lbfgs_steps.run(lbfgs_steps.Config(**fields)))\n"
    "print('PASS' if passed else 'FAIL', detail)\n")


def _both(tmp_path, release, name, folder):
  """(exit code of demo_1210.py, its output, the check's line) on RELEASE."""
  dest = series.overlay(release, tmp_path / name, folder)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(dest), str(HERE.parent / "tools")]))
  procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env)
           for cmd in ([sys.executable, str(HERE.parent / "examples" / "demo_1210.py")],
                       [sys.executable, "-c", VERDICT])]
  (demo, demo_err), (check, check_err) = [p.communicate() for p in procs]
  assert check.startswith(("PASS", "FAIL")), check + check_err
  return procs[0].returncode, demo + demo_err, check.strip()


@pytest.mark.parametrize("release", RELEASES)
def test_issue_1210_program_and_check_agree(tmp_path, release):
  code, out, check = _both(tmp_path, release, "pristine", None)
  assert (code == 0) == check.startswith("PASS"), (out, check)
  assert (code == 0) == (series.version_key(release) >= (0, 2, 5)), out
  code, out, check = _both(tmp_path, release, "patched",
                           series.target(release).folder)
  assert code == 0 and "reached the optimum" in out, out
  assert check.startswith("PASS"), check
