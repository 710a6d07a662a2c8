"""tools/apply.sh on a throwaway environment with its own copy of optax.

The environment shares jax with the one running the tests (through a .pth
file) but has its own optax, so patching it never touches
the optax of the test environment.
"""

import hashlib
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile
import zipfile

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


def test_says_when_the_checks_cannot_run(pristine):
  # As optax 0.2.7 with jax >= 0.10: installed, but it does not import.
  python, site = pristine
  blocker = site / "zz_block_jax.pth"
  blocker.write_text("import sys; sys.modules['jax'] = None\n")
  try:
    result = _run(python=python)
  finally:
    blocker.unlink()
  assert result.returncode == 0, result.stderr
  for label in ("before", "after"):
    assert f"{label}: the checks could not run: ModuleNotFoundError" in (
        result.stdout), result.stdout


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
  assert "optax 0.2.8: patches/0.2.8/" in out


def _tree(root):
  """sha256 of every file under root (bytecode aside): 'nothing changed'."""
  return {
      str(p.relative_to(root)): _sha(p)
      for p in sorted(root.rglob("*"))
      if p.is_file() and "__pycache__" not in p.parts
      and p.name != ".optax-typestable.lock"  # the tool's lock, kept
  }


def _site_tree(site):
  tree = _tree(site / "optax")
  tree.update(
      {n: _sha(site / n) for n in (".optax-typestable.json",)
       if (site / n).exists()})
  return tree


@pytest.fixture
def metadata(pristine):
  """Edits the Version of the installed optax; restores it afterwards."""
  python, site = pristine
  path = site / f"optax-{VERSION}.dist-info" / "METADATA"
  original = path.read_text()

  def set_version(version):
    path.write_text(original.replace(f"\nVersion: {VERSION}\n",
                                     f"\nVersion: {version}\n", 1))
  yield set_version
  path.write_text(original)


def test_state_file_records_the_series(pristine):
  python, site = pristine
  assert _run(python=python).returncode == 0
  state = json.loads((site / ".optax-typestable.json").read_text())
  assert state["version"] == VERSION
  assert state["series"] == "patches/0.2.8"
  assert state["patched"][LINESEARCH] == _sha(site / LINESEARCH)
  assert _run("--revert", python=python).returncode == 0
  assert not (site / ".optax-typestable.json").exists()
  manifest = REPO / "patches" / "manifest" / f"{VERSION}.sha256"
  for line in manifest.read_text().splitlines():
    digest, name = line.split()
    assert _sha(site / name) == digest, name


@pytest.mark.parametrize(
    "version,message",
    [("0.2.99", "not supported"), ("0.2.9.dev0", "development build")],
)
def test_refuses_unknown_version_and_dev_build(pristine, metadata, version,
                                               message):
  python, site = pristine
  metadata(version)
  before = _site_tree(site)
  result = _run(python=python)
  assert result.returncode == 2, result.stdout
  assert message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert _site_tree(site) == before


def test_check_says_not_needed_for_a_fixed_unknown_release(pristine, metadata):
  python, _ = pristine
  assert _run(python=python).returncode == 0
  metadata("0.2.99")  # as if a newer optax release contained the fix
  assert _run("--check", python=python).returncode == 12


def test_refuses_patch_writing_outside_the_package(pristine, tmp_path):
  python, site = pristine
  root = tmp_path / "patches"
  shutil.copytree(REPO / "patches" / "manifest", root / "manifest")
  (root / "targets.tsv").write_text(f"{VERSION}\tevil\t\n")
  (root / "evil").mkdir()
  (root / "evil" / "0001-evil.patch").write_text(
      "Subject: evil\n---\n"
      "diff --git a/optax/../../evil.py b/optax/../../evil.py\n"
      "new file mode 100644\n--- /dev/null\n+++ b/optax/../../evil.py\n"
      "@@ -0,0 +1 @@\n+print('evil')\n")
  before = _site_tree(site)
  result = subprocess.run(
      ["bash", str(APPLY), "--python", str(python)], capture_output=True,
      text=True, check=False,
      env=dict(os.environ, OPTAX_TYPESTABLE_PATCHES=str(root)))
  assert result.returncode == 2
  assert "writes outside the optax package" in result.stderr
  assert _site_tree(site) == before
  assert not (site.parent / "evil.py").exists()


def test_interrupted_apply_is_recovered_by_a_rerun(pristine):
  python, site = pristine
  before = _site_tree(site)
  crashed = subprocess.run(
      ["bash", str(APPLY), "--python", str(python)], capture_output=True,
      text=True, check=False,
      env=dict(os.environ, OPTAX_TYPESTABLE_CRASH_AFTER="1"))
  assert crashed.returncode == 137
  assert _site_tree(site) != before  # mixed files: one swapped, not the rest
  assert (site / ".optax-typestable.journal").exists()
  rerun = _run(python=python)
  assert rerun.returncode == 0, rerun.stderr
  assert "recovered from an interrupted apply" in rerun.stdout
  assert _run("--check", python=python).returncode == 0
  assert not (site / ".optax-typestable.journal").exists()
  assert _run("--revert", python=python).returncode == 0
  assert _site_tree(site) == before


def test_concurrent_applies_are_serialized(pristine):
  python, _ = pristine
  env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
  procs = [
      subprocess.Popen(["bash", str(APPLY), "--python", str(python)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env)
      for _ in range(2)
  ]
  outs = [p.communicate() for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert sum("already applied" in out for out, _ in outs) == 1, outs
  assert _run("--check", python=python).returncode == 0


@pytest.fixture
def checkout(tmp_path):
  """An optax source checkout of the release: its package and a pyproject."""
  root = pathlib.Path(tempfile.mkdtemp(prefix="optax-checkout."))
  wheels = sorted((REPO / ".cache" / "wheels").glob(f"optax-{VERSION}-*.whl"))
  if not wheels:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "-d", str(REPO / ".cache" / "wheels"),
         f"optax=={VERSION}"], check=True)
    wheels = sorted(
        (REPO / ".cache" / "wheels").glob(f"optax-{VERSION}-*.whl"))
  with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
      if name.startswith("optax/"):
        z.extract(name, root)
  (root / "pyproject.toml").write_text('[project]\nname = "optax"\n')
  os.chmod(root, 0o755)
  yield root
  shutil.rmtree(root)


def test_target_checkout_apply_and_revert(checkout):
  before = _tree(checkout)
  applied = subprocess.run(
      ["bash", str(APPLY), "--target", str(checkout), "--python",
       sys.executable], capture_output=True, text=True, check=False)
  assert applied.returncode == 0, applied.stderr
  assert "PASS  compile-once-zoom" in applied.stdout
  assert (checkout / ADDED_TEST).exists()
  reverted = subprocess.run(
      ["bash", str(APPLY), "--target", str(checkout), "--revert"],
      capture_output=True, text=True, check=False)
  assert reverted.returncode == 0, reverted.stderr
  assert _tree(checkout) == before


def _nobody_can_run_the_tool():
  if os.geteuid() != 0 or not shutil.which("setpriv"):
    return False
  probe = subprocess.run(
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
       "/usr/bin/python3", "-c", f"open({str(APPLY.with_suffix('.py'))!r})"],
      capture_output=True, check=False)
  return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_the_tool(),
                    reason="needs root, setpriv and a repository readable by "
                    "nobody, to run the tool without write access")
def test_read_only_package_is_refused(checkout):
  before = _tree(checkout)
  result = subprocess.run(
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
       "bash", str(APPLY), "--target", str(checkout), "--python",
       "/usr/bin/python3"],
      capture_output=True, text=True, check=False,
      env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
  assert result.returncode == 2, result.stdout + result.stderr
  assert "is not writable: nothing changed" in result.stderr
  assert _tree(checkout) == before
