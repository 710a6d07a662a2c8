"""The release matrix: tools/apply.sh on every row of the support matrix.

A row (series.py matrix) is a release of patches/targets.tsv with the
minimum jax its wheel declares, or with the newest jax it runs with. Per
row: apply (each check fails before it where its bug lives, every check
passes after it, the series' behaviour change is printed), apply again
(nothing changed), --check says applied, matrix/test_numerics.py (iterates
bit-identical to the release's), --revert, --check says released.
optax_tests/ pass (it prints what they counted) on each release's newest jax
(what installing the release gets today), and on the minimum jax too for
the oldest and the newest release: every jax of the matrix, Python 3.9
included. Once per release (its newest jax), the optimizers whose state
types still change are printed (tools/state_types.py --config plain:
informative, never a failure).
test_wheel: the patched wheel (apply.sh --wheel) of the oldest and the
newest release, built twice, installed by hash, --check applied.

One environment per (jax, Python), the newest jax being this interpreter's;
the others are built one at a time while the first rows run. A release is an
overlay of its PyPI wheel (--target), the oldest and the newest release a pip
install in a venv over the environment (--python).

Not collected by `pytest` (a quarter of an hour): tools/test.sh runs it as
its step 4; `pytest -v -s matrix/test_releases.py -k 0.2.5` runs one
release. Not for -n: each worker would build every environment. The test
dependencies of a built environment are DEPS.
"""

import concurrent.futures
import contextlib
import glob
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import series

# Installed with jax==J, jaxlib==J in a built environment (etils: optax
# 0.2.3/0.2.4). Pin one here if pip's newest stops working with an old jax.
DEPS = ("pytest", "pytest-xdist", "absl-py", "chex", "etils[epy]", "numpy",
        "scipy")
NEWEST = importlib.metadata.version("jax")
ROWS = sorted(series.matrix(NEWEST), key=lambda r: series.version_key(r[2]),
              reverse=True)  # newest jax first: the others build meanwhile
OLDEST, NEWEST_RELEASE = (min((r[0] for r in ROWS), key=series.version_key),
                          max((r[0] for r in ROWS), key=series.version_key))


def _run(cmd, expect=0, **kwargs):
  """CMD's output; fails the test, with its last lines, on another exit."""
  res = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False,
                       **kwargs)
  tail = "\n".join(res.stdout.splitlines()[-25:])
  assert res.returncode == expect, (
      f"{' '.join(map(str, cmd))}: exit {res.returncode}, expected {expect}"
      f"\n{tail}")
  return res.stdout


def _interpreter(version):
  """A pythonVERSION that runs: on PATH (maybe a pyenv shim), else pyenv's."""
  found = [f"python{version}"]
  with contextlib.suppress(OSError):
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                          check=False).stdout.strip()
    found += sorted(glob.glob(f"{root}/versions/{version}*/bin/python"
                              f"{version}"))
  for python in found:
    with contextlib.suppress(OSError):
      if subprocess.run([python, "-c", ""], capture_output=True,
                        check=False).returncode == 0:
        return python
  raise RuntimeError(f"python{version} not found (or does not run)")


def _environment(jax, python, root):
  """The interpreter of a new venv with jax==JAX and DEPS."""
  venv = root / f"jax-{jax}-py{python or 3}"
  _run([_interpreter(python) if python else sys.executable, "-m", "venv",
        venv])
  pip = [venv / "bin/python", "-m", "pip", "install", "-q",
         "--disable-pip-version-check"]
  _run(pip + ["--upgrade", "pip"])
  _run(pip + [f"jax=={jax}", f"jaxlib=={jax}", *DEPS])
  return venv / "bin/python"


@pytest.fixture(scope="session")
def environments(request, tmp_path_factory):
  """{(jax, python): Future of its interpreter}, for the selected rows."""
  root = tmp_path_factory.mktemp("environments")
  pool = concurrent.futures.ThreadPoolExecutor(1)
  futures = {(NEWEST, ""): concurrent.futures.Future()}
  futures[(NEWEST, "")].set_result(sys.executable)
  for item in request.session.items:
    row = getattr(item, "callspec", None) and item.callspec.params.get("row")
    if row and row[2:] not in futures:
      futures[row[2:]] = pool.submit(_environment, *row[2:], root)
  yield futures
  pool.shutdown(cancel_futures=True)
  shutil.rmtree(root, ignore_errors=True)  # a jax install each


def _id(row):  # release, jax, Python, how optax is installed
  release, _, jax, python = row
  real = "pip" if release in (OLDEST, NEWEST_RELEASE) else "overlay"
  return f"{release}-jax{jax}-py{python or platform.python_version()}-{real}"


@pytest.mark.parametrize("row", ROWS, ids=map(_id, ROWS))
def test_release(row, environments, tmp_path):
  """apply, again, --check, numerics, (optax_tests), --revert, --check."""
  release, folder, jax, _ = row
  envpy = environments[row[2:]].result()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("PYTHONPATH", None)
  if jax != NEWEST:  # jax 0.5.3 runs wrong programs from XLA's cache
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # (checks.py: f(x*) = 14)
  if release in (OLDEST, NEWEST_RELEASE):  # a venv over the environment's
    python = tmp_path / "venv/bin/python"
    _run([envpy, "-m", "venv", tmp_path / "venv"])
    _run([python, "-m", "pip", "install", "-q", "--no-deps",
          "--disable-pip-version-check", series.wheel(release)])
    purelib = _run([python, "-c", "import sysconfig; "
                    "print(sysconfig.get_paths()['purelib'])"]).strip()
    with open(os.path.join(purelib, "shared.pth"), "w", encoding="utf-8") as f:
      f.write(_run([envpy, "-c", "import site; "
                    "print('\\n'.join(site.getsitepackages()))"]))
    where, tested = ["--python", python], dict(env)
  else:
    overlay = series.overlay(release, tmp_path / "overlay")
    python, where = envpy, ["--python", envpy, "--target", overlay]
    tested = dict(env, PYTHONPATH=str(overlay))  # runs the overlay's optax

  def apply(*args, expect=0):
    return _run(["bash", series.REPO / "tools/apply.sh", *where, *args],
                expect, env=env)

  out = apply()
  # Before it, each check fails where its bug lives: on every release, all
  # but seed-1210-scan-x64, whose bug (#1210) optax 0.2.5 fixed.
  before = re.findall(r"^  before: (\S+)  (\S+)", out, re.M)
  passed = [name for verdict, name in before if verdict == "PASS"]
  assert before and passed == (["seed-1210-scan-x64"] if series.version_key(
      release) >= (0, 2, 5) else []), out
  after = re.findall(r"^  after: (\S+)  (\S+)", out, re.M)  # all pass
  assert after and all(verdict == "PASS" for verdict, _ in after), out
  for change in series.behaviour_changes(folder):  # and for the user's code
    assert f"\nbehaviour change: {change}\n" in out, out
  assert "already applied: nothing changed" in apply()
  assert apply("--check").splitlines()[-1] == "applied"
  out = _run([envpy, "-m", "pytest", "-q", "-p", "no:cacheprovider",
              series.REPO / "matrix/test_numerics.py"],
             env=dict(env, OPTAX_VERSION=release))
  assert re.search(r"\b1 passed\b", out.splitlines()[-1]), out
  newest = row == next(r for r in ROWS if r[0] == release)  # its newest jax
  if newest or release in (OLDEST, NEWEST_RELEASE):
    (tmp_path / "cwd").mkdir()  # no ./optax shadows the one under test
    out = _run([python, "-m", "pytest", "-q", "-n", "2", "-p",
                "no:cacheprovider", series.REPO / "optax_tests"],
               cwd=tmp_path / "cwd", env=tested)
    print(f"\noptax_tests: {out.splitlines()[-1]}")
  if newest:
    print("optimizers whose state types change in update (state_types.py):")
    print(subprocess.run(
        [python, series.REPO / "tools/state_types.py", "--config", "plain"],
        env=tested, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=False).stdout)
  apply("--revert")
  assert apply("--check", expect=10).splitlines()[-1] == "not applied"


def _venv_over(envpy, venv, *install):
  """A venv over ENVPY's environment (a .pth file), `pip install INSTALL`."""
  _run([envpy, "-m", "venv", "--without-pip", venv])
  purelib = _run([venv / "bin/python", "-c", "import sysconfig; "
                  "print(sysconfig.get_paths()['purelib'])"]).strip()
  with open(os.path.join(purelib, "shared.pth"), "w", encoding="utf-8") as f:
    f.write(_run([envpy, "-c", "import site; "
                  "print('\\n'.join(site.getsitepackages()))"]))
  _run([envpy, "-m", "pip", "--python", venv / "bin/python", "install", "-q",
        "--no-deps", "--disable-pip-version-check", *install])
  return venv / "bin/python"


WHEEL_ROWS = [next(r for r in ROWS if r[0] == release)  # its newest jax
              for release in sorted({OLDEST, NEWEST_RELEASE})]


@pytest.mark.parametrize("row", WHEEL_ROWS, ids=[
    f"{r[0]}-jax{r[2]}-wheel" for r in WHEEL_ROWS])
def test_wheel(row, environments, tmp_path):
  """--wheel from the installed release (every check its series fixes passes
  on the wheel), again from the wheel cache in a venv without jax (the
  checks cannot run: quick): the same sha256; pip install --require-hashes
  into a venv: --check applied, optax/ byte for byte test_release's patched
  overlay (optax_tests, test_numerics)."""
  release, folder, _, _ = row
  envpy = environments[row[2:]].result()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("PYTHONPATH", None)

  def apply(python, *args):
    return _run(["bash", series.REPO / "tools/apply.sh", "--python", python,
                 *args], env=env)

  out = apply(_venv_over(envpy, tmp_path / "installed", series.wheel(release)),
              "--wheel", tmp_path / "a")
  assert "files from the installed optax" in out, out
  strict = glob.glob(str(series.PATCHES / folder / "*strict*"))
  after = re.findall(r"^  after: (\S+)  (\S+)", out, re.M)
  assert after and all(verdict == "PASS" or not strict and name.startswith(
      "strict-") for verdict, name in after), out
  _run([envpy, "-m", "venv", "--without-pip", tmp_path / "bare"])
  again = apply(tmp_path / "bare/bin/python", "--wheel", tmp_path / "b",
                "--release", release)
  assert "files from the wheel cache" in again, again
  whl = tmp_path / "a" / f"optax-{release}+typestable-py3-none-any.whl"
  digest = series.sha256(whl.read_bytes())
  assert digest == series.sha256((tmp_path / "b" / whl.name).read_bytes())
  (tmp_path / "requirements.txt").write_text(
      f"optax @ {whl.as_uri()} --hash=sha256:{digest}\n")
  python = _venv_over(envpy, tmp_path / "venv", "--require-hashes", "-r",
                      tmp_path / "requirements.txt")
  out = apply(python, "--check")
  assert out.splitlines()[-1] == "applied", out
  assert f"optax {release}+typestable in" in out.splitlines()[0], out
  overlay = series.overlay(release, tmp_path / "overlay", folder)
  files = [{p.relative_to(d): p.read_bytes() for p in d.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts} for d in (
                next(tmp_path.glob("venv/lib/python*/site-packages/optax")),
                overlay / "optax")]
  assert files[0] == files[1]
