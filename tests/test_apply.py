"""tools/apply.sh and apply.py on throwaway environments with optax 0.2.8.

An environment is a venv (no pip: the tests' pip drives it through
`pip --python`) holding a copy of optax 0.2.8 installed once per worker from
the PyPI wheel, sharing jax & co. with the test interpreter through a .pth
file, so patching it never touches the optax of the test environment.

Most tests run apply.py with tests/stub_checks.py in place of the real checks
(its test hook $OPTAX_TYPESTABLE_CHECKS; no jax, $STUB_CHECKS picks a
behaviour); tests passing **REAL run the real tools/checks.py. Tests that need
a run stopped at a given point use the tool's SIGSTOP hook
($OPTAX_TYPESTABLE_STOP_AT), never a sleep.
"""

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import site
import subprocess
import sys

import pytest

import checks
import series

REPO = series.REPO

VERSION = "0.2.8"
LINESEARCH, NUMERICS, TRANSFORM = (f"optax/_src/{m}.py" for m in
                                   ("linesearch", "numerics", "transform"))
PINS = series.manifest(VERSION)
STUB = REPO / "tests" / "stub_checks.py"  # $OPTAX_TYPESTABLE_CHECKS
REAL = {"OPTAX_TYPESTABLE_CHECKS": None}  # **REAL: the real tools/checks.py


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
  """A copy of tools/ and patches/ (series.py finds patches/ beside tools/)."""
  shutil.copytree(REPO / "tools", dest / "tools",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(REPO / "patches", dest / "patches")
  return dest


def _environ(extra):
  """os.environ outside any environment, with the stub checks, and EXTRA
  (a None value unsets a variable)."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
  environ.update({"OPTAX_TYPESTABLE_CHECKS": str(STUB), **extra})
  return {k: v for k, v in environ.items() if v is not None}


def _run(repo, *args, env=None, python=None, cwd=None, **extra):
  cmd = [sys.executable, str(repo / "tools" / "apply.py")]
  cmd += ["--python", str(python or env.python)] if (python or env) else []
  return subprocess.run(cmd + list(args), capture_output=True, text=True,
                        env=_environ(extra), cwd=cwd, timeout=900, check=False)


def _sh(repo, *args, shell="bash", **extra):
  """tools/apply.sh ARGS run by SHELL, with the environment variables EXTRA."""
  return subprocess.run([shell, str(repo / "tools" / "apply.sh"), *args],
                        capture_output=True, text=True, env=_environ(extra),
                        timeout=900, check=False)


def _started(repo, env, *args, **extra):
  """apply.py ARGS on ENV, running (its own process group), output piped."""
  return subprocess.Popen(
      [sys.executable, str(repo / "tools" / "apply.py"), "--python",
       str(env.python), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, start_new_session=True, env=_environ(extra))


def _stopped(repo, env, point, *args, **extra):
  """apply.py ARGS started and stopped by its hook at POINT."""
  proc = _started(repo, env, *args, OPTAX_TYPESTABLE_STOP_AT=point, **extra)
  _, status = os.waitpid(proc.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status), f"did not stop at {point}: {proc.communicate()}"
  return proc


def _resume(proc):
  """Continues a stopped run; its CompletedProcess."""
  os.kill(proc.pid, signal.SIGCONT)
  out, err = proc.communicate(timeout=300)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill(proc):
  os.killpg(proc.pid, signal.SIGKILL)  # the whole process group
  proc.communicate()


def _refused(result, code, *words):
  """Exit CODE, one line on stderr with WORDS, no traceback."""
  err = result.stderr.strip()
  assert result.returncode == code, (result.returncode, result.stdout, err)
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  for word in words:
    assert word in err, err


def _verdicts(out, label=""):
  """{check: 'PASS' | 'FAIL'} of the lines LABEL<verdict>  <check> in OUT."""
  return {w[1]: w[0] for w in (l.strip()[len(label):].split() for l in
                               out.splitlines() if l.strip().startswith(label))
          if len(w) > 1 and w[0] in ("PASS", "FAIL") and w[1] in checks.CHECKS}


def _set_version(env, version):
  """Makes the environment's optax say VERSION: metadata and __version__."""
  for file, line in ((f"optax-{VERSION}.dist-info/METADATA", "Version: {}\n"),
                     ("optax/__init__.py", '__version__ = "{}"\n')):
    text = (env.site / file).read_text()
    assert line.format(VERSION) in text, file
    (env.site / file).write_text(text.replace(line.format(VERSION),
                                              line.format(version), 1))


def _bare_venv(tmp_path):
  """A venv without optax (nor pip): its root."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(tmp_path / "bare")], check=True)
  return tmp_path / "bare"


def _compile(env, *args, **extra):
  """python -m compileall ARGS of the environment's optax/ (EXTRA: its
  environment variables, e.g. PYTHONPYCACHEPREFIX)."""
  subprocess.run([str(env.python), "-m", "compileall", "-q", "-f", *args,
                  str(env.site / "optax")], env=_environ(extra), check=True)


def _user_checks(env, **extra):
  """{check: verdict} of a plain `python tools/checks.py`, as a user runs it
  with the environment's interpreter (EXTRA: environment variables)."""
  ran = subprocess.run([str(env.python), str(REPO / "tools" / "checks.py")],
                       capture_output=True, text=True, cwd=env.site.parent,
                       env=_environ(dict(extra, JAX_PLATFORMS="cpu")),
                       check=False)
  return _verdicts(ran.stdout) or ran.stdout + ran.stderr[-800:]


def _imports(env):
  return subprocess.run([str(env.python), "-c", "import optax"],
                        capture_output=True, check=False).returncode == 0


def _pip_install(python, *args, version=VERSION):
  """pip install optax==VERSION into PYTHON's environment, from the wheel."""
  subprocess.run(
      [sys.executable, "-m", "pip", "--python", str(python), "install",
       "--quiet", "--disable-pip-version-check", "--no-deps", "--no-index",
       "--find-links", str(series.wheel(version).parent), *args,
       f"optax=={version}"], check=True, capture_output=True)


def _reinstall(env):
  """What the tool tells users: pip install --force-reinstall --no-deps."""
  _pip_install(env.python, "--force-reinstall")


PATCHED = dict.fromkeys(checks.CHECKS, "PASS")  # 0.2.8 patched


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
  """Real checks: apply, pip --force-reinstall, --check 10, apply, --check 0,
  apply again changes nothing, --revert gives the release back."""
  applied = _run(repo, env=env, **REAL)
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert _verdicts(applied.stdout, "before: ") != _verdicts(
      applied.stdout, "after: ") == dict.fromkeys(checks.CHECKS, "PASS")
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


@pytest.mark.parametrize("fixed", [True, False], ids=["patched", "pristine"])
def test_newer_release_than_the_series(env, repo, fixed):
  """Real checks on an optax whose metadata says 0.2.9 (newer than every
  target): patched 0.2.8 files -> exit 0 "already has the fix" (also
  --check); pristine ones -> exit 3 naming the failing checks and git am."""
  if fixed:
    assert _run(repo, env=env).returncode == 0
  _set_version(env, "0.2.9")
  before = _tree(env.site)
  for args in ((), ("--check",)):
    result = _run(repo, *args, env=env, **REAL)
    if fixed:
      assert result.returncode == 0, result.stdout + result.stderr
      assert result.stdout.splitlines()[-1] == (
          "optax 0.2.9 already has the fix: nothing to patch")
    else:
      _refused(result, 3, "optax 0.2.9 is newer than the series and ",
               " fail; to patch an optax checkout: git am patches/main/*.patch")
      failing = result.stderr.split(" and ", 1)[1].split(" fail;")[0]
      assert set(failing.split(", ")) <= set(checks.MAIN), failing
  assert _tree(env.site) == before


def test_corrupted_patch_changes_nothing(env, release, tmp_path):
  """A patch whose `+` line is corrupted (it still applies): exit 6."""
  repo = _repo_copy(tmp_path / "repo")
  patch = sorted((repo / "patches" / VERSION).glob("0001-*.patch"))[0]
  lines = patch.read_text().splitlines(keepends=True)
  n = next(i for i, l in enumerate(lines)
           if l.startswith("+") and not l.startswith("+++"))
  lines[n] = lines[n].rstrip("\n") + "  # corrupted\n"  # still applies
  patch.write_text("".join(lines))
  _refused(_run(repo, env=env), 6, "sha256", "nothing changed")
  assert _tree(env.site) == release and _imports(env)


@pytest.mark.parametrize("damage", [
    "manifest-not-utf8", "targets-not-utf8", "patch-not-utf8",
    "targets-missing", "manifest-missing"])
def test_damaged_repository_files(env, release, tmp_path, damage):
  """A repository file that is missing or not UTF-8: one line naming it,
  exit 6 (--list too for targets.tsv), nothing changed."""
  repo = _repo_copy(tmp_path / "repo")
  what, how = damage.split("-", 1)
  file = {"manifest": repo / "patches" / "manifest" / f"{VERSION}.sha256",
          "targets": repo / "patches" / "targets.tsv",
          "patch": sorted((repo / "patches" / VERSION).glob("*.patch"))[-1]
          }[what]
  if how == "missing":
    file.unlink()
  else:
    file.write_bytes(file.read_bytes() + b"# caf\xe9\n")
  name = str(file.relative_to(repo))
  runs = [(), ("--check",), ("--revert",), ("--dry-run",)]
  for args in runs + ([("--list",)] if what == "targets" else []):
    _refused(_run(repo, *args, env=env), 6, name)
  assert _tree(env.site) == release


@pytest.mark.parametrize("evil", [
    # a symlink added into optax
    "diff --git a/optax/_src/evil.py b/optax/_src/evil.py\n"
    "new file mode 120000\nindex 0000000..1111111\n--- /dev/null\n"
    "+++ b/optax/_src/evil.py\n@@ -0,0 +1 @@\n+../../canary.py\n",
    # no a/ b/ prefixes: a path outside optax deleted
    "diff --git optax/../canary.py optax/../canary.py\n"
    "deleted file mode 100644\nindex 1111111..0000000\n"
    "--- optax/../canary.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-canary\n",
    "diff --git a/optax/../canary.py b/optax/../canary.py\n"
    "index 1111111..2222222 100644\n--- a/optax/../canary.py\n"
    "+++ b/optax/../canary.py\n@@ -1 +1 @@\n-canary\n+evil\n",
], ids=["symlink", "no-prefix-delete", "dotdot"])
def test_series_that_is_not_plain_modifications_is_refused(env, tmp_path,
                                                           evil):
  """Only modifications of existing regular optax/ files: else exit 6."""
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
    ("checks-before", 10), ("temps-written", 10), ("replaced-1", 11),
    ("replaced-2", 11), ("checks-after", 0)])
def test_kill_9_then_rerun_completes(env, release, repo, point, check):
  """kill -9 at each hook point: --check says where it stopped; the next
  run removes the temporaries and completes; --revert gives the release."""
  _kill(_stopped(repo, env, point))
  assert _run(repo, "--check", env=env).returncode == check
  temps = list(env.site.rglob("*.typestable-tmp"))
  assert bool(temps) == (point.startswith(("temps", "replaced"))), temps
  rerun = _run(repo, env=env)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert _run(repo, "--check", env=env).returncode == 0
  assert not list(env.site.rglob("*.typestable-tmp"))
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


@pytest.mark.parametrize("case", ["replaced-1", f"replaced-{len(PINS)}",
                                  "pycache-prefix"])
def test_unchecked_hash_bytecode_never_hides_the_patch(repo, env, tmp_path,
                                                       case):
  """optax compiled to unchecked-hash .pyc (never rechecked): a run killed at
  replaced-N, rerun; or, the .pyc under $PYTHONPYCACHEPREFIX, apply with
  that prefix (its after-checks agree): a plain `python tools/checks.py`
  gives the patched verdicts."""
  prefix = {"PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")} if (
      case == "pycache-prefix") else {}
  _compile(env, "--invalidation-mode", "unchecked-hash", **prefix)
  if not prefix:
    _kill(_stopped(repo, env, case))
  applied = _run(repo, env=env, **prefix, **(REAL if prefix else {}))
  assert applied.returncode == 0, applied.stdout + applied.stderr
  after = _verdicts(applied.stdout, "after: ") if prefix else PATCHED
  assert after == _user_checks(env, **prefix) == PATCHED


LBFGS = """
import jax, jax.numpy as jnp, optax
f = lambda x: jnp.sum((x - 1.0) ** 2)
opt, x = optax.lbfgs(), jnp.zeros(3)
state, value_and_grad = opt.init(x), optax.value_and_grad_from_state(f)
@jax.jit
def step(x, state):
  value, grad = value_and_grad(x, state=state)
  updates, state = opt.update(grad, state, x, value=value, grad=grad,
                              value_fn=f)
  return optax.apply_updates(x, updates), state
for _ in range(3):
  x, state = step(x, state)
assert float(f(x)) < 1e-6, x
"""


@pytest.mark.parametrize("mode,point", [
    ("apply", "replaced-1"), ("apply", "replaced-2"),
    ("--revert", "replaced-1"), ("--revert", "replaced-2")])
def test_every_prefix_of_the_writes_runs_lbfgs(env, repo, mode, point):
  """Killed after 1 or 2 of the 3 replacements (patching or reverting),
  optax.lbfgs() still imports and reaches the optimum."""
  if mode == "--revert":
    assert _run(repo, env=env).returncode == 0
  _kill(_stopped(repo, env, point, *(() if mode == "apply" else (mode,))))
  assert _run(repo, "--check", env=env).returncode == 11
  ran = subprocess.run([str(env.python), "-c", LBFGS], capture_output=True,
                       text=True, check=False, cwd=env.site.parent,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert ran.returncode == 0, ran.stderr[-500:]


def test_bad_interpreters_get_one_line(repo, env, tmp_path):
  """Not Python, not runnable (the OS error is named), no optax (with the
  python3 on PATH that has it, for $CONDA_PREFIX), bad or empty arguments:
  exit 2, one line."""
  text = tmp_path / "not-executable"
  text.write_text(f"#!/bin/sh\nexec {env.python} \"$@\"\n")
  text.chmod(0o644)  # even root cannot execute it
  answers = tmp_path / "answers-json"  # JSON, but not the probe's answer
  answers.write_text("#!/bin/sh\necho '{}'\n")
  answers.chmod(0o755)
  for python, said in (("/bin/true", "not a Python"),
                       ("/bin/echo", "not a Python"),
                       (answers, "not a Python"),
                       ("/bin/false", "not a Python"),
                       (text, f"cannot run {text}: Permission denied"),
                       (tmp_path, f"cannot run {tmp_path}: Permission denied"),
                       (tmp_path / "missing", "No such file or directory")):
    for args in (("--check",), ()):
      _refused(_run(repo, *args, python=python), 2, said)
  bare = _bare_venv(tmp_path)
  _refused(_run(repo, "--check", python=bare / "bin" / "python"), 2,
           "no optax", "pip install optax")
  _refused(_sh(repo, "--check", CONDA_PREFIX=str(bare),
               PATH=f"{env.python.parent}:{os.environ['PATH']}"), 2,
           f"--python {env.python.parent / 'python3'}")
  _refused(_run(repo, "--bogus"), 2, "--bogus")
  _refused(_run(repo, "--check", "--revert", env=env), 2)
  for args in (("--python", ""), ("--target", ""), ("--python=", "--check")):
    _refused(_sh(repo, *args), 2, "non-empty")


def test_interpreter_with_a_banner(repo, env, tmp_path):
  """An interpreter printing at start-up (no newline) and at exit, run from
  a folder whose random.py and json.py shadow the standard library's:
  --check still finds the environment's optax, exit 10."""
  wrapper = tmp_path / "python-with-banner"
  wrapper.write_text(f"#!/bin/sh\nprintf 'Welcome (site banner) '\n"
                     f"{env.python} \"$@\"; rc=$?\necho Goodbye\nexit $rc\n")
  wrapper.chmod(0o755)
  cwd = tmp_path / "work"
  cwd.mkdir()
  for module in ("random.py", "json.py"):
    (cwd / module).write_text("raise ImportError('shadows the stdlib')\n")
  checked = _run(repo, "--check", python=wrapper, cwd=cwd)
  assert checked.returncode == 10, checked.stdout + checked.stderr
  assert str(env.site / "optax") in checked.stdout


def test_banner_does_not_disable_the_rollback(repo, env, release):
  """A .pth printing a banner at start-up, a series breaking `import
  optax`: exit 1, the released files are back."""
  (env.site / "banner.pth").write_text(
      "import sys; sys.stdout.write('Welcome (site banner)\\n')\n")
  release = _tree(env.site)
  _refused(_run(repo, env=env, STUB_CHECKS="breaks-import"), 1,
           "after: optax does not import: ModuleNotFoundError: jax: the "
           "released files were put back")
  assert _tree(env.site) == release


@pytest.mark.parametrize("version", ["0.2.2", "0.1.9", "0.2.8rc1"])
def test_unsupported_release(repo, env, version):
  """An optax older than (or between) the supported releases: exit 3, also
  for --check; --force is no option."""
  _set_version(env, version)
  before = _tree(env.site)
  _refused(_run(repo, "--check", env=env), 3, "not a supported release")
  _refused(_run(repo, env=env), 3, "git am patches/main/*.patch")
  _refused(_run(repo, "--force", env=env), 2, "--force")
  assert _tree(env.site) == before


def test_edited_patched_file_says_how_to_get_out(repo, env):
  """An edited file: exit 4 with the pip command that restores it."""
  assert _run(repo, env=env).returncode == 0
  with open(env.site / LINESEARCH, "a") as f:
    f.write("# local edit\n")
  before = _tree(env.site)
  for args in (("--revert",), (), ("--check",)):
    _refused(_run(repo, *args, env=env), 4, "modified by someone else",
             LINESEARCH,
             f"pip install --force-reinstall --no-deps optax==={VERSION}")
  assert _tree(env.site) == before
  _reinstall(env)
  assert _run(repo, "--check", env=env).returncode == 10


@pytest.mark.parametrize("point", ["checks-before", "temps-written"])
def test_file_edited_while_it_runs_is_kept(repo, env, release, point):
  """transform.py (written last) edited during the before-checks or after
  the temporaries are written: exit 4, the edit kept, the other files
  released, no temporaries left."""
  proc = _stopped(repo, env, point)
  with open(env.site / TRANSFORM, "a") as f:
    f.write("# edited meanwhile\n")
  edited = {p: h for p, h in _tree(env.site).items()
            if not p.endswith(".typestable-tmp")}
  _refused(_resume(proc), 4, TRANSFORM, "changed while this ran",
           "nothing changed")
  assert _tree(env.site) == edited


@pytest.mark.parametrize("point", ["checks-before", "temps-written"])
def test_release_installed_while_it_runs_is_kept(repo, env, point):
  """pip install optax==0.2.7 during the run (0.2.7 shares two of the three
  files with 0.2.8): exit 4, a whole 0.2.7 left."""
  proc = _stopped(repo, env, point)
  _pip_install(env.python, version="0.2.7")
  _refused(_resume(proc), 4, "changed while this ran", "nothing changed")
  assert {p: _sha(env.site / p) for p in PINS} == {
      p: released for p, (released, _) in series.manifest("0.2.7").items()}


def test_revert_while_apply_runs_its_after_checks(repo, env, release):
  """--revert while an apply is stopped before its after-checks: the revert
  exits 0, the apply 4 (not "applied"), --check says not applied."""
  proc = _stopped(repo, env, "checks-after")
  assert _run(repo, "--revert", env=env).returncode == 0
  _refused(_resume(proc), 4, "changed while the checks ran", LINESEARCH)
  assert _run(repo, "--check", env=env).returncode == 10
  assert _tree(env.site) == release


def test_optax_folder_in_the_working_directory_is_not_patched(
    repo, env, tmp_path):
  """Run from a directory holding an optax/ (a pip --target install): the
  environment's optax is patched, that one untouched."""
  shadow = tmp_path / "shadow"
  series.overlay(VERSION, shadow)
  before = _tree(shadow)
  applied = _run(repo, env=env, cwd=shadow)
  assert _tree(shadow) == before
  assert _run(repo, "--check", env=env).returncode == 0
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert applied.stdout.splitlines()[0] == (
      f"{env.python}: optax {VERSION} in {env.site / 'optax'}, series "
      f"patches/{VERSION}")


def test_checks_importing_another_optax_are_refused(repo, env, release,
                                                    tmp_path):
  """A .pth that puts a copy of optax (no metadata) first on sys.path: the
  checks import that copy, not the files to patch: exit 2, nothing changed."""
  shutil.copytree(env.site / "optax", tmp_path / "other" / "optax")
  (env.site / "first.pth").write_text(
      f"import sys; sys.path.insert(0, {str(tmp_path / 'other')!r})\n")
  release = _tree(env.site)
  _refused(_run(repo, env=env), 2, "the checks imported optax from "
           f"{tmp_path / 'other' / 'optax'}, not {env.site / 'optax'}",
           "nothing changed")
  assert _tree(env.site) == release


def _chattr(flag, *files):
  if subprocess.run(["chattr", flag, *map(str, files)], capture_output=True,
                    check=False).returncode != 0:
    pytest.skip("chattr is not supported here")


@pytest.fixture
def immutable():
  """chattr +i FILE... (as root); undone at the end."""
  if os.geteuid() != 0:
    pytest.skip("chattr +i needs root")
  files = []
  yield lambda *f: (files.extend(f), _chattr("+i", *f))
  if files:
    _chattr("-i", *files)


def test_immutable_file_puts_everything_back(repo, env, release, immutable):
  """chattr +i: refused up front (exit 5); set after the temporaries are
  written: exit 7, the files replaced before it put back."""
  immutable(env.site / TRANSFORM)
  _refused(_run(repo, env=env), 5, TRANSFORM, "not writable")
  _chattr("-i", env.site / TRANSFORM)
  proc = _stopped(repo, env, "temps-written")
  immutable(env.site / TRANSFORM)  # written after numerics, linesearch
  _refused(_resume(proc), 7, TRANSFORM, "Operation not permitted",
           "nothing changed")
  assert _tree(env.site) == release
  assert not list(env.site.rglob("*.typestable-tmp"))


@pytest.mark.parametrize("case", ["after-check-fails", "write-fails"])
def test_failed_put_back_names_the_patched_files(repo, env, release,
                                                 immutable, case):
  """The put-back fails too (an immutable file): exit 8 naming the failure,
  the files still patched and --revert; --revert then completes."""
  if case == "after-check-fails":  # put back: transform, linesearch, numerics
    proc = _stopped(repo, env, "checks-after", STUB_CHECKS="regress")
    immutable(env.site / LINESEARCH)
    reason, patched = "stub-released passed before and failed after", [
        LINESEARCH, NUMERICS]
  else:  # numerics, linesearch written; transform fails; numerics stuck
    proc = _stopped(repo, env, "replaced-1")
    immutable(env.site / NUMERICS, env.site / TRANSFORM)
    reason, patched = f"cannot write {env.site / TRANSFORM}", [NUMERICS]
  _refused(_resume(proc), 8, reason, "putting files back failed too",
           f"patched: {', '.join(patched)}; once that is fixed, run: "
           f"tools/apply.sh --python {env.python} --revert")
  assert {p for p in PINS if _sha(env.site / p) == PINS[p][1]} == set(patched)
  _chattr("-i", *(env.site / p for p in PINS))
  assert _run(repo, "--check", env=env).returncode == 11
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_group_and_mode_are_kept(repo, env, release):
  """Files of another user (run as root): apply and --revert keep their
  owner, group and mode."""
  for p in PINS:
    os.chown(env.site / p, 1234, 5678)
    os.chmod(env.site / p, 0o664)
  assert _run(repo, env=env).returncode == 0
  for p in PINS:
    st = os.stat(env.site / p)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o664)
  assert _run(repo, "--revert", env=env).returncode == 0
  assert {(os.stat(env.site / p).st_uid, os.stat(env.site / p).st_gid)
          for p in PINS} == {(1234, 5678)}
  assert _tree(env.site) == release


def test_symlinked_file_is_refused(repo, env, tmp_path):
  """A symlinked touched file: exit 5 for every mode that writes or would,
  nothing changed; --check reads through it (not applied)."""
  real = tmp_path / "numerics.py"
  shutil.move(env.site / NUMERICS, real)
  (env.site / NUMERICS).symlink_to(real)
  before = _tree(env.site)
  for args in ((), ("--revert",), ("--dry-run",)):
    _refused(_run(repo, *args, env=env), 5, "symlink", NUMERICS)
  assert _run(repo, "--check", env=env).returncode == 10
  assert _tree(env.site) == before and _sha(real) == PINS[NUMERICS][0]


def test_read_only_install_is_refused_even_as_root(repo, env, release):
  """chmod a-w: exit 5 (root too), --dry-run says "writable: no"; so too a
  read-only __pycache__ holding unchecked-hash .pyc of a touched module."""
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
  _compile(env, "--invalidation-mode", "unchecked-hash")
  cache = env.site / "optax" / "_src" / "__pycache__"
  cache.chmod(0o555)
  _refused(_run(repo, env=env), 5, str(cache), "nothing changed")
  assert _tree(env.site) == release


def test_directory_named_like_a_temporary_is_left_alone(repo, env):
  """A directory named like a temporary of a dead run does not block apply,
  --revert or --check, and is left as it is."""
  odd = env.site / "optax" / "_src" / ".linesearch.py.999999999.typestable-tmp"
  odd.mkdir()
  (odd / "keep").write_text("mine\n")
  for args, code in (((), 0), (("--check",), 0), (("--revert",), 0)):
    result = _run(repo, *args, env=env)
    assert result.returncode == code, result.stdout + result.stderr
  assert (odd / "keep").read_text() == "mine\n"


def test_writes_only_the_touched_files(repo, env, release, tmp_path):
  """Only the touched files change; only their modules' bytecode goes; no
  state file, journal or lock; no scratch copies left in $TMPDIR."""
  _compile(env)
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
  """A check that passed before and fails after, or optax that no longer
  imports: exit 1, the released files back."""
  result = _run(repo, env=env, STUB_CHECKS="regress")
  _refused(result, 1, "stub-released passed before and failed after: the "
           "released files were put back")
  assert _tree(env.site) == release
  result = _run(repo, env=env, STUB_CHECKS="breaks-import")
  _refused(result, 1, "after: optax does not import")
  assert _tree(env.site) == release


def test_checks_that_cannot_run_before_do_not_block(repo, env):
  """optax does not import before nor after (as 0.2.7 with jax 0.10): the
  pinned hashes guarantee the files, applied."""
  result = _run(repo, env=env, STUB_CHECKS="broken")
  assert result.returncode == 0, result.stdout + result.stderr
  for label in ("before", "after"):
    assert (f"{label}: optax does not import: ModuleNotFoundError: jax"
            in result.stdout)
  assert "applied anyway" in result.stdout
  assert _run(repo, "--check", env=env).returncode == 0


def test_target_checkout_without_building_a_venv(tmp_path):
  """--target patches, checks and reverts a source tree; no .venv made."""
  repo = _repo_copy(tmp_path / "repo")
  checkout = tmp_path / "checkout"
  series.overlay(VERSION, checkout)
  before = _tree(checkout)
  applied = _run(repo, "--target", str(checkout), STUB_CHECKS="import")
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert "before: PASS  stub-runs" in applied.stdout
  assert not (repo / ".venv").exists()
  assert _run(repo, "--target", str(checkout), "--check").returncode == 0
  assert _run(repo, "--target", str(checkout), "--revert").returncode == 0
  assert _tree(checkout) == before
  _refused(_run(repo, "--target", str(tmp_path)), 2, "not an optax source")


def test_concurrent_runs_both_apply(repo, env):
  """Two applies at once: both exit 0, --check says applied."""
  procs = [_started(repo, env) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert _run(repo, "--check", env=env).returncode == 0


def test_run_while_another_is_stopped_with_its_temporaries(repo, env,
                                                           release):
  """An apply while another is stopped with its temporaries written: it
  leaves them alone and exits 0; the other resumes, finds the files patched
  and exits 0 too; no temporary left, --check 0, --revert gives the release."""
  proc = _stopped(repo, env, "temps-written")
  other = _run(repo, env=env)
  assert other.returncode == 0, other.stdout + other.stderr
  resumed = _resume(proc)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "wrote the patched nothing" in resumed.stdout
  assert not list(env.site.rglob("*.typestable-tmp"))
  assert _run(repo, "--check", env=env).returncode == 0
  assert _run(repo, "--revert", env=env).returncode == 0
  assert _tree(env.site) == release


@pytest.mark.parametrize("how", ["VIRTUAL_ENV", "CONDA_PREFIX", "PATH"])
def test_apply_sh_finds_the_environment_the_user_is_in(repo, env, how):
  """tools/apply.sh with $VIRTUAL_ENV, $CONDA_PREFIX or the environment's bin
  first on PATH: the first line names it, it is the one patched, no .venv."""
  root = env.python.parents[1]
  extra = ({"PATH": f"{root / 'bin'}:{os.environ['PATH']}"} if how == "PATH"
           else {how: str(root)})
  python = root / "bin" / ("python3" if how == "PATH" else "python")
  first = (f"{python}: optax {VERSION} in {env.site / 'optax'}, series "
           f"patches/{VERSION}")
  checked = _sh(repo, "--check", **extra)
  assert (checked.returncode, checked.stdout.splitlines()[0]) == (10, first)
  applied = _sh(repo, **extra)
  assert applied.returncode == 0, applied.stdout + applied.stderr
  assert applied.stdout.splitlines()[0] == first
  assert _run(repo, "--check", env=env).returncode == 0
  assert not (repo / ".venv").exists()


def test_no_environment_found_creates_nothing(tmp_path):
  """No $VIRTUAL_ENV, no python3 with optax on PATH, no .venv: --check and
  --dry-run exit 2, --list 0; none creates a file in the repository."""
  repo = _repo_copy(tmp_path / "repo")
  path = f"{_bare_venv(tmp_path) / 'bin'}:{os.environ['PATH']}"
  files = sorted(repo.rglob("*"))
  for args in (("--check",), ("--dry-run",), ("--revert",)):
    _refused(_sh(repo, *args, PATH=path), 2, "no environment with optax")
  assert _sh(repo, "--list", PATH=path).returncode == 0
  assert sorted(repo.rglob("*")) == files


def test_list_and_help(repo):
  """--list (apply.sh run by bash or sh): the releases and their series;
  --help (exit 0): the exit codes."""
  for shell in ("bash", "sh"):  # sh: dash, say, as `sh tools/apply.sh`
    listed = _sh(repo, "--list", shell=shell)
    assert listed.returncode == 0, listed.stderr
    assert f"optax {VERSION}: patches/{VERSION}" in listed.stdout
    assert "optax 0.2.7: patches/0.2.7 (with jax 0.9.2)" in listed.stdout
  helped = _sh(repo, "--help")
  assert helped.returncode == 0 and "exit codes" in helped.stdout
  assert " 11  --check: partly applied" in helped.stdout
  assert "   8  putting files back failed too" in helped.stdout


def test_output_gone_changes_no_outcome(repo, env, release, tmp_path):
  """stdout's reader gone (| head -1): the run goes on as if read. Checks
  that regress: exit 1, the release put back; else applied, exit 0. stderr
  closed (2>&-) or read-only (what a wrapper such as a pyenv shim leaves on
  fd 2 then): a usage error still exits 2."""
  for checks, code in (("regress", 1), ("", 0)):
    proc = _started(repo, env, STUB_CHECKS=checks)
    proc.stdout.close()
    result = subprocess.CompletedProcess(proc.args, proc.wait(), "",
                                         proc.stderr.read())
    if code:
      _refused(result, 1, "the released files were put back")
      assert _tree(env.site) == release
    else:
      assert (result.returncode, result.stderr) == (0, "")
      assert _run(repo, "--check", env=env).returncode == 0
  script = str(repo / "tools" / "apply.sh")
  (tmp_path / "read-only").write_text("")
  with open(tmp_path / "read-only", encoding="utf-8") as read_only:
    for cmd, stderr in ((["bash", script], read_only), (
        ["bash", "-c", 'exec bash "$0" "$1" 2>&-', script], None)):
      ran = subprocess.run(cmd + ["--bogus"], stdout=subprocess.DEVNULL,
                           stderr=stderr, env=_environ({}), check=False)
      assert ran.returncode == 2, (cmd, ran)


def test_relative_python_through_a_symlinked_apply_sh(repo, env, tmp_path):
  """--python venv/bin/python from its parent, apply.sh run through a
  symlink: the environment is found (--check: not applied, 10)."""
  link = tmp_path / "typestable"
  link.symlink_to(repo / "tools" / "apply.sh")
  relative = env.python.relative_to(env.python.parents[2])
  result = subprocess.run(["bash", str(link), "--python", str(relative),
                           "--check"], capture_output=True, text=True,
                          cwd=env.python.parents[2], env=_environ({}),
                          check=False)
  assert result.returncode == 10, result.stdout + result.stderr
  assert result.stdout.startswith(f"{env.python}: optax {VERSION}")


def test_python_variables_of_the_caller_do_not_matter(repo, env):
  """apply.sh runs apply.py with -E: PYTHONSAFEPATH, PYTHONOPTIMIZE=2
  (no docstrings), a PYTHONHOME elsewhere change nothing."""
  assert _sh(repo, "--check", "--python", str(env.python),
             PYTHONSAFEPATH="1").returncode == 10
  helped = _sh(repo, "--help", PYTHONOPTIMIZE="2", PYTHONHOME="/nonexistent")
  assert helped.returncode == 0 and "exit codes" in helped.stdout


def test_version_metadata_missing_or_not_that_of_the_files(repo, env,
                                                           tmp_path):
  """optax's metadata without a Version, or with another than its
  __init__.py's: exit 4, one line, nothing changed (--wheel without a
  Version: exit 2, asking for --release). A build of optax main
  (__version__ 0.2.9.dev, metadata 0.2.9.dev0) is a newer release: exit 3."""
  meta = next(env.site.glob("optax-*.dist-info")) / "METADATA"
  text = meta.read_text()
  for version in ("", "Version: 0.2.7\n"):
    meta.write_text(text.replace(f"Version: {VERSION}\n", version))
    _refused(_run(repo, env=env), 4, "__init__.py")
    assert _run(repo, "--check", env=env).returncode == 4
    if not version:
      _refused(_run(repo, "--wheel", tmp_path / "out", env=env), 2,
               "--release X")
      assert not (tmp_path / "out").exists()
  meta.write_text(text)
  _set_version(env, "0.2.9.dev0")
  init = env.site / "optax" / "__init__.py"
  init.write_text(init.read_text().replace('"0.2.9.dev0"', '"0.2.9.dev"'))
  _refused(_run(repo, env=env), 3, "newer than the series")


def test_target_with_an_interpreter_that_is_not_python(repo, tmp_path):
  """--target with --python /bin/true or a missing file: exit 2, one line
  (the checks could not have run), the tree unchanged."""
  checkout = series.overlay(VERSION, tmp_path / "checkout")
  before = _tree(checkout)
  for python, said in (("/bin/true", "not a Python"),
                       (tmp_path / "missing", "No such file or directory")):
    _refused(_run(repo, "--target", str(checkout), python=python), 2, said)
  assert _tree(checkout) == before


def test_pythonpath_with_another_optax_is_refused(repo, env, release,
                                                 tmp_path):
  """$PYTHONPATH making another optax the one the interpreter imports: exit 2
  naming --target and an empty PYTHONPATH, nothing changed (--python and
  apply.sh alike); with --target DIR, that optax is patched."""
  other = series.overlay(VERSION, tmp_path / "other")
  pristine = _tree(other)
  path = {"PYTHONPATH": str(other)}
  for result in (_run(repo, env=env, **path), _sh(
      repo, "--check", VIRTUAL_ENV=str(env.python.parents[1]), **path)):
    _refused(result, 2, f"imports optax from {other / 'optax'}",
             f"--target {other},", "empty PYTHONPATH")
  assert _tree(env.site) == release and _tree(other) == pristine
  assert _run(repo, "--target", str(other), env=env, **path).returncode == 0
  assert _tree(other) != pristine and _tree(env.site) == release


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminated_run_ends_its_checks(repo, env, release, tmp_path, sig):
  """SIGTERM or SIGHUP while the checks run: the checks child ends, its
  temporary directory goes, exit 130 (see --help), nothing changed."""
  pid_file = tmp_path / "checks.pid"  # the stub stops apply once it runs
  # apply keeps ignoring what its parent ignores (nohup): not this signal.
  previous = signal.signal(sig, signal.SIG_DFL)
  proc = _started(repo, env, STUB_CHECKS="hang", STUB_PID_FILE=str(pid_file))
  signal.signal(sig, previous)
  try:
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), proc.communicate()
    child = int(pid_file.read_text())
    scratch = os.readlink(f"/proc/{child}/cwd")  # checks.run's temporary
    os.kill(proc.pid, sig)
    result = _resume(proc)
    _refused(result, 130, "interrupted")
    assert not os.path.exists(f"/proc/{child}") and not os.path.exists(
        scratch)
    assert _tree(env.site) == release
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)


def test_stray_second_dist_info_gets_advice_that_clears_it(repo, env):
  """A second optax-*.dist-info (another version's) beside optax: exit 4 with
  the command that removes it; after that command, --check works (10)."""
  stray = env.site / "optax-0.2.7.dist-info"
  shutil.copytree(env.site / f"optax-{VERSION}.dist-info", stray)
  meta = stray / "METADATA"
  meta.write_text(meta.read_text().replace(f"Version: {VERSION}\n",
                                           "Version: 0.2.7\n"))
  result = _run(repo, "--check", env=env)
  _refused(result, 4, f"rm -r {stray}")
  advice = result.stderr.strip()
  subprocess.run(advice[advice.index("rm -r "):].split(), check=True)
  assert _run(repo, "--check", env=env).returncode == 10
