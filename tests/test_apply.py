"""tools/apply.py on throwaway environments, each with its own optax 0.2.8.

An environment is a venv (no pip: the tests' pip drives it through
`pip --python`) holding a copy of optax 0.2.8 installed once per worker from
the PyPI wheel, sharing jax & co. with the test interpreter through a .pth
file, so patching it never touches the optax of the test environment.

Most tests run a copy of tools/ and patches/ whose tools/checks.py is a fast
stub (it does not import jax; $STUB_CHECKS picks a behaviour); one test runs
the real checks. Each defect of issue #9 (the old tools/apply.sh) has a test
here, named in its docstring.
"""

import dataclasses
import os
import pathlib
import shutil
import signal
import site
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
import series  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

VERSION = "0.2.8"
LINESEARCH, NUMERICS, TRANSFORM = (f"optax/_src/{m}.py" for m in
                                   ("linesearch", "numerics", "transform"))
PINS = series.manifest(VERSION)
STUB = '''"""Stand-in for tools/checks.py: same CLI, no jax, behaviour by $STUB_CHECKS."""
import hashlib, importlib.util, os, pathlib, sys
mode = os.environ.get("STUB_CHECKS", "")
spec = importlib.util.find_spec("optax")
src = pathlib.Path(spec.origin).parent / "_src" / "linesearch.py"
pins = (pathlib.Path(__file__).parents[1] / "patches/manifest/0.2.8.sha256")
patched = any(l.split()[1] == hashlib.sha256(src.read_bytes()).hexdigest()
              for l in pins.read_text().splitlines())
if mode == "broken" or (mode == "breaks-import" and patched):
  print("checks.py: optax does not import: ModuleNotFoundError: jax", file=sys.stderr)
  sys.exit(3)
if mode == "import":
  import optax
print(f"optax 0.2.8 from {spec.origin}")
print("PASS  stub-runs                  ok")
if mode == "regress":
  print(("FAIL" if patched else "PASS") + "  stub-released              -")
  sys.exit(1 if patched else 0)
'''


@dataclasses.dataclass
class Env:
  python: pathlib.Path
  site: pathlib.Path


def _sha(path):
  return series.sha256(path.read_bytes())


def _tree(root):
  """Every file under root (bytecode aside): sha256, or a symlink's target."""
  return {
      str(p.relative_to(root)): (f"-> {os.readlink(p)}" if p.is_symlink()
                                 else _sha(p))
      for p in sorted(root.rglob("*"))
      if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts
  }


def _repo_copy(dest):
  """tools/ and patches/ with a stub checks.py: series.py finds patches/."""
  shutil.copytree(REPO / "tools", dest / "tools",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(REPO / "patches", dest / "patches")
  (dest / "tools" / "checks.py").write_text(STUB)
  return dest


def _run(repo, *args, env=None, python=None, **extra):
  environ = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
  environ.update(extra)
  cmd = [sys.executable, str(repo / "tools" / "apply.py")]
  cmd += ["--python", str(python or env.python)] if (python or env) else []
  return subprocess.run(cmd + list(args), capture_output=True, text=True,
                        env=environ, timeout=900, check=False)


def _refused(result, code, *words):
  """Exit CODE, one line on stderr with WORDS, no traceback."""
  err = result.stderr.strip()
  assert result.returncode == code, (result.returncode, result.stdout, err)
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  for word in words:
    assert word in err, err


def _imports(env):
  return subprocess.run([str(env.python), "-c", "import optax"],
                        capture_output=True, check=False).returncode == 0


def _pip_install(python, *args):
  """pip install optax==VERSION into PYTHON's environment, from the wheel."""
  subprocess.run(
      [sys.executable, "-m", "pip", "--python", str(python), "install",
       "--quiet", "--disable-pip-version-check", "--no-deps", "--no-index",
       "--find-links", str(series.wheel(VERSION).parent), *args,
       f"optax=={VERSION}"], check=True, capture_output=True)


def _reinstall(env):
  """What the tool tells users: pip install --force-reinstall --no-deps."""
  _pip_install(env.python, "--force-reinstall")


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
  return _repo_copy(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def template(tmp_path_factory):
  """optax 0.2.8 installed once (per worker) by pip into a venv."""
  root = tmp_path_factory.mktemp("template")
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(root / "venv")], check=True)
  _pip_install(root / "venv" / "bin" / "python")
  return next((root / "venv").glob("lib/python*/site-packages"))


@pytest.fixture
def env(tmp_path, template):
  """A fresh environment with the released optax 0.2.8 of `template`."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(tmp_path / "venv")], check=True)
  site_dir = next((tmp_path / "venv").glob("lib/python*/site-packages"))
  shutil.copytree(template, site_dir, dirs_exist_ok=True)
  # jax & co. from the test interpreter: a .pth entry comes after the venv's
  # own site-packages, so the venv's optax shadows the test environment's.
  (site_dir / "shared.pth").write_text("\n".join(site.getsitepackages()))
  yield Env(tmp_path / "venv" / "bin" / "python", site_dir)
  subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=False)


@pytest.fixture
def release(env):
  """The environment's site-packages as released (compare with _tree)."""
  return _tree(env.site)


def test_force_reinstall_cycle_with_the_real_checks(env, release, repo):
  """#2: after pip install --force-reinstall the old tool was stuck."""
  applied = _run(REPO, env=env)  # the real tools/checks.py
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert "before: FAIL  compile-once-zoom" in applied.stdout
  assert "after: PASS  compile-once-zoom" in applied.stdout
  assert {p: _sha(env.site / p) for p in PINS} == {
      p: patched for p, (_, patched) in PINS.items()}
  _reinstall(env)
  assert _run(repo, "--check", env=env).returncode == 10
  assert _run(repo, env=env).returncode == 0
  assert _run(repo, "--check", env=env).returncode == 0
  again = _run(repo, env=env)
  assert again.returncode == 0 and "nothing changed" in again.stdout
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


def test_corrupted_patch_changes_nothing(env, release, tmp_path):
  """#1: a patch with a corrupted `+` line was applied, success reported."""
  repo = _repo_copy(tmp_path / "repo")
  patch = sorted((repo / "patches" / VERSION).glob("0001-*.patch"))[0]
  lines = patch.read_text().splitlines(keepends=True)
  n = next(i for i, l in enumerate(lines)
           if l.startswith("+") and not l.startswith("+++"))
  lines[n] = lines[n].rstrip("\n") + "  # corrupted\n"  # still applies
  patch.write_text("".join(lines))
  _refused(_run(repo, env=env), 6, "sha256", "nothing changed")
  assert _tree(env.site) == release and _imports(env)


@pytest.mark.parametrize("evil", [
    # 3: a symlink added into optax (the old tool wrote its target).
    "diff --git a/optax/_src/evil.py b/optax/_src/evil.py\n"
    "new file mode 120000\nindex 0000000..1111111\n--- /dev/null\n"
    "+++ b/optax/_src/evil.py\n@@ -0,0 +1 @@\n+../../canary.py\n",
    # 6: no a/ b/ prefixes (the old tool deleted a path outside optax).
    "diff --git optax/../canary.py optax/../canary.py\n"
    "deleted file mode 100644\nindex 1111111..0000000\n"
    "--- optax/../canary.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-canary\n",
    "diff --git a/optax/../canary.py b/optax/../canary.py\n"
    "index 1111111..2222222 100644\n--- a/optax/../canary.py\n"
    "+++ b/optax/../canary.py\n@@ -1 +1 @@\n-canary\n+evil\n",
], ids=["symlink", "no-prefix-delete", "dotdot"])
def test_series_that_is_not_plain_modifications_is_refused(env, tmp_path,
                                                           evil):
  """#3, #6: only modifications of existing regular optax/ files."""
  repo = _repo_copy(tmp_path / "repo")
  (env.site / "canary.py").write_text("canary\n")
  for p in (repo / "patches" / VERSION).glob("*.patch"):
    p.unlink()
  (repo / "patches" / VERSION / "0001-evil.patch").write_text(
      f"Subject: [PATCH] evil\n\n---\n{evil}")
  before = _tree(env.site)
  for args in ((), ("--check",), ("--dry-run",)):
    _refused(_run(repo, *args, env=env), 6, "0001-evil.patch")
  assert _tree(env.site) == before


@pytest.mark.parametrize("point,check", [
    ("temps-written", 10), ("replaced-1", 11), ("replaced-2", 11),
    ("checks-after", 0)])
def test_kill_9_then_rerun_completes(env, release, repo, point, check):
  """#5: a kill at the wrong moment left the old tool stuck."""
  proc = subprocess.Popen(
      [sys.executable, str(repo / "tools" / "apply.py"), "--python",
       str(env.python)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      start_new_session=True, env=dict(os.environ,
                                       OPTAX_TYPESTABLE_STOP_AT=point))
  _, status = os.waitpid(proc.pid, os.WUNTRACED)  # stopped itself at point
  assert os.WIFSTOPPED(status), f"did not reach {point}: {status}"
  os.killpg(proc.pid, signal.SIGKILL)  # the whole process group
  proc.wait()
  assert _run(repo, "--check", env=env).returncode == check
  temps = list(env.site.rglob("*.typestable-tmp"))
  assert bool(temps) == (point != "checks-after"), temps
  rerun = _run(repo, env=env)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert _run(repo, "--check", env=env).returncode == 0
  assert not list(env.site.rglob("*.typestable-tmp"))
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


def test_kill_9_during_revert_then_revert_completes(env, release, repo):
  """#5, the other way: --revert killed half-way, then rerun."""
  assert _run(repo, env=env).returncode == 0
  proc = subprocess.Popen(
      [sys.executable, str(repo / "tools" / "apply.py"), "--revert",
       "--python", str(env.python)], stdout=subprocess.DEVNULL,
      start_new_session=True,
      env=dict(os.environ, OPTAX_TYPESTABLE_STOP_AT="replaced-1"))
  assert os.WIFSTOPPED(os.waitpid(proc.pid, os.WUNTRACED)[1])
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert _run(repo, "--check", env=env).returncode == 11
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


def test_bad_interpreters_get_one_line(repo, env, tmp_path):
  """#7, #8: tracebacks or wrong answers for /bin/true, a directory, echo."""
  text = tmp_path / "not-executable"
  text.write_text("print('hi')\n")
  for python in ("/bin/true", "/bin/echo", "/bin/false", tmp_path, text,
                 tmp_path / "missing"):
    for args in (("--check",), ()):
      _refused(_run(repo, *args, python=python), 2, "not a Python")
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(tmp_path / "bare")], check=True)
  _refused(_run(repo, "--check", python=tmp_path / "bare/bin/python"), 2,
           "no optax", "pip install optax")
  _refused(_run(repo, "--bogus"), 2, "--bogus")
  _refused(_run(repo, "--check", "--revert", env=env), 2)


def test_interpreter_with_a_banner(repo, env, tmp_path):
  """#8: start-up output (even a fake marker) does not confuse --check."""
  wrapper = tmp_path / "python-with-banner"
  wrapper.write_text(
      "#!/bin/sh\necho 'Welcome to Python (site banner)'\n"
      "echo 'OPTAX-TYPESTABLE [\"9.9\", \"/nowhere\"]'\n"
      f"exec {env.python} \"$@\"\n")
  wrapper.chmod(0o755)
  checked = _run(repo, "--check", python=wrapper)
  assert checked.returncode == 10, checked.stdout + checked.stderr
  assert str(env.site / "optax") in checked.stdout


@pytest.mark.parametrize("version", ["0.2.99", "0.2.9.dev0"])
def test_unsupported_release(repo, env, version):
  """#8: no --force: an unsupported release is refused, --check says so."""
  meta = env.site / f"optax-{VERSION}.dist-info" / "METADATA"
  meta.write_text(meta.read_text().replace(f"\nVersion: {VERSION}\n",
                                           f"\nVersion: {version}\n", 1))
  before = _tree(env.site)
  _refused(_run(repo, "--check", env=env), 3, "not a supported release")
  _refused(_run(repo, env=env), 3, "git am")
  _refused(_run(repo, "--force", env=env), 2, "--force")
  assert _tree(env.site) == before


def test_edited_patched_file_says_how_to_get_out(repo, env):
  """#9: revert refused an edited file with no way out."""
  assert _run(repo, env=env).returncode == 0
  with open(env.site / LINESEARCH, "a") as f:
    f.write("# local edit\n")
  before = _tree(env.site)
  for args in (("--revert",), (), ("--check",)):
    _refused(_run(repo, *args, env=env), 4, "modified by someone else",
             LINESEARCH,
             f"pip install --force-reinstall --no-deps optax=={VERSION}")
  assert _tree(env.site) == before
  _reinstall(env)
  assert _run(repo, "--check", env=env).returncode == 10


def test_immutable_file_puts_everything_back(repo, env, release):
  """#4: chattr +i mid-swap left a half-patched package."""
  target = str(env.site / TRANSFORM)
  if os.geteuid() != 0:
    pytest.skip("chattr +i needs root")
  if subprocess.run(["chattr", "+i", target], capture_output=True,
                    check=False).returncode != 0:
    pytest.skip("chattr +i is not supported here")
  try:
    # Immutable before the run: refused up front (access(2) says so).
    _refused(_run(repo, env=env), 5, TRANSFORM, "not writable")
    subprocess.run(["chattr", "-i", target], check=True)
    # Immutable in the middle of the run: after the temporaries are
    # written, before the renames (linesearch, numerics, then transform).
    proc = subprocess.Popen(
        [sys.executable, str(repo / "tools" / "apply.py"), "--python",
         str(env.python)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ,
                            OPTAX_TYPESTABLE_STOP_AT="temps-written"))
    assert os.WIFSTOPPED(os.waitpid(proc.pid, os.WUNTRACED)[1])
    subprocess.run(["chattr", "+i", target], check=True)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    _refused(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
             7, TRANSFORM, "Operation not permitted", "nothing changed")
    assert _tree(env.site) == release  # linesearch, numerics put back
    assert not list(env.site.rglob("*.typestable-tmp"))
  finally:
    subprocess.run(["chattr", "-i", target], check=True)
  assert _imports(env)
  assert _run(repo, "--check", env=env).returncode == 10
  assert _run(repo, env=env).returncode == 0


def test_symlinked_file_is_refused(repo, env, tmp_path):
  """#10: the old tool replaced a symlinked file by a regular file."""
  real = tmp_path / "numerics.py"
  shutil.move(env.site / NUMERICS, real)
  (env.site / NUMERICS).symlink_to(real)
  before = _tree(env.site)
  for args in ((), ("--check",), ("--revert",), ("--dry-run",)):
    _refused(_run(repo, *args, env=env), 5, "symlink", NUMERICS)
  assert _tree(env.site) == before and _sha(real) == PINS[NUMERICS][0]


def test_read_only_install_is_refused_even_as_root(repo, env, release):
  """#10: root ignored chmod a-w; --dry-run ignored writability."""
  subprocess.run(["chmod", "-R", "a-w", str(env.site / "optax")], check=True)
  dry = _run(repo, "--dry-run", env=env)
  _refused(dry, 5, "not writable")
  assert "writable: no" in dry.stdout
  _refused(_run(repo, env=env), 5, "not writable", "nothing changed")
  assert _run(repo, "--check", env=env).returncode == 10
  assert _tree(env.site) == release
  subprocess.run(["chmod", "-R", "u+w", str(env.site / "optax")], check=True)
  dry = _run(repo, "--dry-run", env=env)
  assert dry.returncode == 0 and "writable: yes" in dry.stdout
  assert LINESEARCH in dry.stdout and _tree(env.site) == release


def test_writes_only_the_touched_files(repo, env, release, tmp_path):
  """#7, #10: no state file, journal or lock; only the touched modules'
  bytecode removed; no scratch copies left in $TMPDIR."""
  subprocess.run([str(env.python), "-m", "compileall", "-q",
                  str(env.site / "optax" / "_src")], check=True)
  cache = env.site / "optax" / "_src" / "__pycache__"
  pycs = {p.name for p in cache.iterdir()}
  (tmp_path / "tmpdir").mkdir()
  applied = _run(repo, env=env, TMPDIR=str(tmp_path / "tmpdir"))
  assert applied.returncode == 0, applied.stdout + applied.stderr
  after = _tree(env.site)
  assert sorted(after) == sorted(release)
  assert [p for p in after if after[p] != release[p]] == list(PINS)
  gone = pycs - {p.name for p in cache.iterdir()}
  assert sorted(gone) == sorted(
      n for n in pycs if n.split(".")[0] in ("linesearch", "numerics",
                                             "transform"))
  assert not list((tmp_path / "tmpdir").iterdir())


def test_checks_that_regress_put_the_release_back(repo, env, release):
  """A check that passed before and fails after: released files back."""
  result = _run(repo, env=env, STUB_CHECKS="regress")
  _refused(result, 1, "stub-released passed before and failed after",
           "released files were put back")
  assert _tree(env.site) == release
  result = _run(repo, env=env, STUB_CHECKS="breaks-import")
  _refused(result, 1, "optax imported before and not after")
  assert _tree(env.site) == release


def test_checks_that_cannot_run_before_do_not_block(repo, env):
  """As optax 0.2.7 with jax 0.10: the hashes guarantee the files."""
  result = _run(repo, env=env, STUB_CHECKS="broken")
  assert result.returncode == 0, result.stdout + result.stderr
  for label in ("before", "after"):
    assert (f"{label}: the checks could not run: checks.py: optax does not "
            "import: ModuleNotFoundError: jax") in result.stdout
  assert "applied anyway" in result.stdout
  assert _run(repo, "--check", env=env).returncode == 0


def test_target_checkout_without_building_a_venv(tmp_path):
  """#10: --target built .venv first; it patches a source tree."""
  repo = _repo_copy(tmp_path / "repo")
  checkout = tmp_path / "checkout"
  series.overlay(VERSION, checkout)
  before = _tree(checkout)
  applied = _run(repo, "--target", str(checkout), STUB_CHECKS="import")
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert f"optax 0.2.8 from {checkout}/optax/__init__.py" in applied.stdout
  assert not (repo / ".venv").exists()
  assert _run(repo, "--target", str(checkout), "--check").returncode == 0
  assert _run(repo, "--target", str(checkout), "--revert").returncode == 0
  assert _tree(checkout) == before
  _refused(_run(repo, "--target", str(tmp_path)), 2, "not an optax source")


def test_concurrent_runs_never_wait_or_corrupt(repo, env):
  """#10: the old lock could wait forever; now each file is always whole."""
  procs = [subprocess.Popen(
      [sys.executable, str(repo / "tools" / "apply.py"), "--python",
       str(env.python)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert {p.returncode for p in procs} <= {0, 7}, outs
  assert _run(repo, "--check", env=env).returncode in (0, 10, 11)
  assert _run(repo, env=env).returncode == 0
  assert _run(repo, "--check", env=env).returncode == 0


def test_list_and_help(repo):
  listed = _run(repo, "--list")
  assert listed.returncode == 0
  assert f"optax {VERSION}: patches/{VERSION}" in listed.stdout
  assert "optax 0.2.7: patches/0.2.7 (with jax 0.9.2)" in listed.stdout
  helped = _run(repo, "--help")
  assert helped.returncode == 0 and "exit codes" in helped.stdout
  assert " 11  --check: partly applied" in helped.stdout
