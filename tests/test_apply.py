"""tools/apply.sh on a throwaway environment with its own copy of optax.

The environment shares jax with the one running the tests (through a .pth
file) but has its own optax, so patching it never touches
the optax of the test environment.
"""

import hashlib
import os
import pathlib
import site
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
APPLY = REPO / "tools" / "apply.sh"
VERSION = "0.2.8"
LINESEARCH = "optax/_src/linesearch.py"
ADDED_TEST = "optax/_src/linesearch_type_stability_test.py"


def _run(*args, python):
  return subprocess.run(
      ["bash", str(APPLY), "--python", str(python), *args],
      capture_output=True, text=True, check=False,
      env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
  )


def _sha(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("env")
  subprocess.run([sys.executable, "-m", "venv", str(root / "venv")],
                 check=True)
  python = root / "venv" / "bin" / "python"
  subprocess.run(
      [str(python), "-m", "pip", "install", "--quiet", "--no-deps",
       "--disable-pip-version-check", f"optax=={VERSION}"],
      check=True, capture_output=True,
  )
  # Share jax & co. with this environment: a .pth entry comes after the
  # venv's own site-packages, so the venv's optax shadows ours.
  own_site = subprocess.run(
      [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True).stdout.strip()
  pathlib.Path(own_site, "shared.pth").write_text(
      "\n".join(site.getsitepackages()) + "\n")
  site_dir = pathlib.Path(subprocess.run(
      [str(python), "-c", "import optax, os; "
       "print(os.path.dirname(os.path.dirname(optax.__file__)))"],
      check=True, capture_output=True, text=True).stdout.strip())
  assert site_dir.is_relative_to(root), site_dir
  return python, site_dir


@pytest.fixture
def pristine(env):
  python, site = env
  yield python, site
  # Leave the environment pristine for the next test, whatever happened.
  if _run("--check", python=python).returncode == 0:
    assert _run("--revert", python=python).returncode == 0


def test_apply_check_revert_cycle(pristine):
  python, site = pristine
  before = _sha(site / LINESEARCH)
  assert _run("--check", python=python).returncode == 10
  applied = _run(python=python)
  assert applied.returncode == 0, applied.stderr
  assert "FAIL  compile-once-zoom" in applied.stdout  # before
  assert "PASS  compile-once-zoom" in applied.stdout  # after
  assert _sha(site / LINESEARCH) != before
  assert (site / ADDED_TEST).exists()
  assert _run("--check", python=python).returncode == 0
  again = _run(python=python)
  assert again.returncode == 0 and "already applied" in again.stdout
  reverted = _run("--revert", python=python)
  assert reverted.returncode == 0, reverted.stderr
  assert _sha(site / LINESEARCH) == before
  assert not (site / ADDED_TEST).exists()
  assert "not applied" in _run("--revert", python=python).stdout


def test_dry_run_changes_nothing(pristine):
  python, site = pristine
  before = _sha(site / LINESEARCH)
  result = _run("--dry-run", python=python)
  assert result.returncode == 0 and LINESEARCH in result.stdout
  assert _sha(site / LINESEARCH) == before


def test_refuses_locally_modified_file(pristine):
  python, site = pristine
  path = site / LINESEARCH
  original = path.read_bytes()
  try:
    # Outside every hunk: `patch` alone would accept it.
    path.write_bytes(original + b"# local change\n")
    modified = _sha(path)
    result = _run(python=python)
    assert result.returncode == 2
    assert "locally modified" in result.stderr
    assert _sha(path) == modified
    assert not (site / ADDED_TEST).exists()
  finally:
    path.write_bytes(original)


def test_bad_inputs(tmp_path):
  no_python = _run(python=tmp_path / "nope")
  assert no_python.returncode == 2 and "not an executable" in no_python.stderr
  bad_flag = subprocess.run(["bash", str(APPLY), "--bogus"],
                            capture_output=True, text=True, check=False)
  assert bad_flag.returncode == 2 and "unknown argument" in bad_flag.stderr
  subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "bare")],
                 check=True)
  missing = _run(python=tmp_path / "bare" / "bin" / "python")
  assert missing.returncode == 2 and "pip install optax" in missing.stderr


def test_list_names_every_target():
  out = subprocess.run(["bash", str(APPLY), "--list"], capture_output=True,
                       text=True, check=True).stdout
  assert "optax 0.2.8: patches/0.2.7/" in out
