"""tools/apply.sh --wheel: the patched wheel, built, installed and refused.

Environments and the stub checks (no jax) are those of test_apply.py (the
checks gate a wheel, they do not change its bytes); the real checks run on
the installed wheel here, and on its build in matrix/test_releases.py. uv
comes from pyproject.toml (beside this interpreter, or on PATH).
"""

import base64
import hashlib
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import tempfile
import zipfile


import pytest

import checks
import series
# The environments, the stub checks and the helpers of test_apply.py.
# pylint: disable=g-multiple-import,unused-import,redefined-outer-name
from test_apply import LINESEARCH, PINS, VERSION, _environ, _refused
from test_apply import _repo_copy, _run
from test_apply import env, repo, template

WHEEL = f"optax-{VERSION}+typestable-py3-none-any.whl"
INFO = f"optax-{VERSION}+typestable.dist-info/"
UV = shutil.which("uv", path=f"{pathlib.Path(sys.executable).parent}:"
                  f"{os.environ['PATH']}")
SHARED = site.getsitepackages()  # jax & co. for the environments


def _built(result, out):
  """The wheel RESULT wrote into OUT and its sha256, as its output says."""
  assert result.returncode == 0, result.stdout + result.stderr
  digest = series.sha256((out / WHEEL).read_bytes())
  assert f"wrote {out / WHEEL}\n  sha256 {digest}\n" in result.stdout
  for change in series.behaviour_changes(series.target(VERSION).folder):
    assert f"\nbehaviour change: {change}\n" in result.stdout
  return out / WHEEL, digest


def _requirements(path, whl, digest):
  path.write_text(f"optax @ {whl.as_uri()} --hash=sha256:{digest}\n")
  return path


def _venv(path, *pth):
  """A venv without pip at PATH, the folders PTH on its sys.path."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)],
                 check=True)
  site_dir = next(path.glob("lib/python*/site-packages"))
  (site_dir / "shared.pth").write_text("\n".join(pth))
  return path / "bin" / "python", site_dir


def _pip(python, *args):
  return subprocess.run([sys.executable, "-m", "pip", "--python", str(python),
                         "--disable-pip-version-check", *map(str, args)],
                        capture_output=True, text=True, check=False)


def _record_hash(data):
  return "sha256=" + base64.urlsafe_b64encode(
      hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def built(repo, tmp_path_factory):
  """(wheel, sha256) built once with the stub checks, from the wheel cache."""
  out = tmp_path_factory.mktemp("built")
  python, _ = _venv(out / "venv")  # no optax: from the cache
  result = _run(repo, "--wheel", out, "--release", VERSION, python=python,
                OPTAX_WHEEL_CACHE=str(series.wheel(VERSION).parent))
  assert f"optax {VERSION}'s files from the wheel cache" in result.stdout
  return _built(result, out)


def test_offline_rebuild_gives_the_same_bytes(repo, env, built, tmp_path):
  """No index, no cache: from the installed release, the same sha256 as from
  the cache; entries sorted, dated 1980, RECORD right, the touched files
  patched, the others the release's. Installed optax patched in place and no
  wheel to be had: exit 2, nothing written."""
  empty = tmp_path / "empty"
  empty.mkdir()
  offline = dict(PIP_NO_INDEX="1", OPTAX_WHEEL_CACHE=str(empty),
                 PIP_CACHE_DIR=str(empty), PIP_FIND_LINKS="")
  result = _run(repo, "--wheel", tmp_path / "out", env=env, **offline)
  assert (f"optax {VERSION}'s files from the installed optax in {env.site} "
          "(as its RECORD says)") in result.stdout
  whl, digest = _built(result, tmp_path / "out")
  assert digest == built[1] and not list(empty.iterdir())
  with zipfile.ZipFile(whl) as zf, zipfile.ZipFile(
      series.wheel(VERSION)) as rz:
    names = [i.filename for i in zf.infolist()]
    assert names == sorted(names[:-1], key=lambda n: (n.startswith(INFO), n)
                           ) + [INFO + "RECORD"]
    assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in zf.infolist()} == {0o100644}
    record = zf.read(INFO + "RECORD").decode().splitlines()
    assert record == [f"{n},{_record_hash(zf.read(n))},{len(zf.read(n))}"
                      for n in names[:-1]] + [f"{INFO}RECORD,,"]
    assert f"\nVersion: {VERSION}+typestable\n" in zf.read(
        INFO + "METADATA").decode()
    released = {n.replace(f"optax-{VERSION}.dist-info/", INFO): rz.read(n)
                for n in rz.namelist() if not n.endswith("/RECORD")}
    assert sorted(released) == sorted(names[:-1])
    assert {n for n in released if zf.read(n) != released[n]} == {
        *PINS, INFO + "METADATA"}
    assert {p: series.sha256(zf.read(p)) for p in PINS} == {
        p: pin[1] for p, pin in PINS.items()}
  assert _run(repo, env=env).returncode == 0  # patched in place: the cache
  result = _run(repo, "--wheel", tmp_path / "out2", env=env, **offline)
  _refused(result, 2, f"the installed {LINESEARCH} is not as its RECORD says",
           "nothing written")
  assert not (tmp_path / "out2").exists()


def test_checks_that_regress_write_no_wheel(repo, env, tmp_path):
  """A check that passes on the release and fails on the wheel: exit 1."""
  result = _run(repo, "--wheel", tmp_path / "out", env=env,
                STUB_CHECKS="regress")
  _refused(result, 1, "stub-released passed before and failed after: no "
           "wheel written")
  assert not list((tmp_path / "out").glob("*"))


def test_target_tree_of_the_wheel(repo, env, built, tmp_path):
  """pip install --no-deps --target DIR of the wheel: --target DIR --check
  says applied, --revert is refused (exit 2) naming the removal of the
  wheel's dist-info and pip's --target install of optax===X, and changes
  nothing; a modified file: exit 4 naming pip's --target install of the
  wheel, which mends it; the release route, with the release and our wheel both on the index,
  gives the release back (optax==X would pick X+typestable again)."""
  target = tmp_path / "target"
  installed = _pip(env.python, "install", "--no-deps", "--target", target,
                   built[0])
  assert installed.returncode == 0, installed.stdout + installed.stderr
  files = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
  checked = _run(repo, "--target", target, "--check", env=env)
  assert checked.returncode == 0 and checked.stdout.endswith("applied\n")
  _refused(_run(repo, "--target", target, "--revert", env=env), 2,
           "installed from a patched wheel", f"rm -r {target / INFO[:-1]}, "
           f"then ", f"install --no-deps --upgrade --target {target} "
           f"optax==={VERSION}")
  assert files == {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
  linesearch = target / LINESEARCH  # modified: the repair is the wheel's
  linesearch.write_text(linesearch.read_text() + "# mine\n")
  fix = f"install --no-deps --upgrade --target {target} DIR/{WHEEL}"
  _refused(_run(repo, "--target", target, "--check", env=env), 4,
           "modified by someone else", fix)
  repaired = _pip(env.python, *fix.replace("DIR", str(built[0].parent)).split())
  assert repaired.returncode == 0, repaired.stdout + repaired.stderr
  assert linesearch.read_bytes() == files[linesearch]
  assert _run(repo, "--target", target, "--check", env=env).returncode == 0
  both = tmp_path / "index"
  both.mkdir()
  for whl in (built[0], series.wheel(VERSION)):
    shutil.copy(whl, both)
  shutil.rmtree(target / INFO)
  released = _pip(env.python, "install", "--no-deps", "--upgrade", "--target",
                  target, "--no-index", "--find-links", both,
                  f"optax==={VERSION}")
  assert released.returncode == 0, released.stdout + released.stderr
  assert [d.name for d in target.glob("optax-*")] == [
      f"optax-{VERSION}.dist-info"]
  checked = _run(repo, "--target", target, "--check", env=env)
  assert checked.returncode == 10 and checked.stdout.endswith(
      "not applied\n"), checked.stdout + checked.stderr


@pytest.mark.parametrize("damage", ["no wheel pin", "malformed"])
def test_manifest_that_pins_no_wheel(tmp_path, damage):
  """--wheel from the cache, the manifest without its wheel's line or with a
  malformed one: exit 6 naming the manifest (patches/ is broken), not the
  good cached wheel; nothing written."""
  repo = _repo_copy(tmp_path / "repo")
  manifest = repo / "patches" / "manifest" / f"{VERSION}.sha256"
  lines = manifest.read_text().splitlines(keepends=True)
  manifest.write_text("".join(lines[1:]) if damage == "no wheel pin" else
                      "\ufeff" + "".join(lines))
  python, _ = _venv(tmp_path / "venv")
  result = _run(repo, "--wheel", tmp_path / "out", "--release", VERSION,
                python=python, PIP_NO_INDEX="1",
                OPTAX_WHEEL_CACHE=str(series.wheel(VERSION).parent))
  _refused(result, 6, f"patches/manifest/{VERSION}.sha256", "nothing changed")
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "a file changed"])
def test_broken_cache_and_killed_build(repo, tmp_path, damage):
  """A cached wheel that is not the release's (truncated, or a valid wheel
  with a file changed): exit 2, one line naming it and its pinned sha256,
  nothing written; a temporary left in DIR by a killed build goes with the
  next build; a symlink at a build's own temporary is not written through."""
  python, _ = _venv(tmp_path / "venv")
  bad = tmp_path / "cache" / series.wheel(VERSION).name
  bad.parent.mkdir()
  if damage == "truncated":
    bad.write_bytes(series.wheel(VERSION).read_bytes()[:1000])
  else:
    with zipfile.ZipFile(series.wheel(VERSION)) as zf, zipfile.ZipFile(
        bad, "w") as out:
      for i in zf.infolist():  # alias.py: a file no series touches
        out.writestr(i, zf.read(i) + b"\n" * (
            i.filename == "optax/_src/alias.py"))
  result = _run(repo, "--wheel", tmp_path / "out", "--release", VERSION,
                python=python, OPTAX_WHEEL_CACHE=str(bad.parent),
                PIP_NO_INDEX="1")
  _refused(result, 2, f"{bad} is not the wheel {VERSION}.sha256 pins",
           "remove it", "nothing written")
  assert not (tmp_path / "out").exists()
  left = tmp_path / "out" / f".{WHEEL}.999999999.tmp"  # no such process
  left.parent.mkdir()
  left.write_bytes(b"partial")
  result = _run(repo, "--wheel", tmp_path / "out", "--release", VERSION,
                python=python, OPTAX_WHEEL_CACHE=str(
                    series.wheel(VERSION).parent))
  _built(result, tmp_path / "out")
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [WHEEL]
  precious = tmp_path / "precious"  # a symlink at the next build's temporary
  precious.write_bytes(b"mine")
  shell = f'ln -s {precious} "$0/.{WHEEL}.$$.tmp" && exec "$@"'  # same PID
  result = subprocess.run(
      ["sh", "-c", shell, *map(str, (
          tmp_path / "out", sys.executable, repo / "tools" / "apply.py",
          "--python", python, "--wheel", tmp_path / "out", "--release",
          VERSION))], capture_output=True, text=True, check=False,
      env=_environ({"OPTAX_WHEEL_CACHE": str(series.wheel(VERSION).parent)}))
  assert not _built(result, tmp_path / "out")[0].is_symlink()
  assert precious.read_bytes() == b"mine"


def test_installed_by_hash_is_applied(built, tmp_path):
  """The wheel pinned by hash in a requirements file, pip install
  --require-hashes into a fresh venv: --check applied, every check passes
  (the real ones), pip list says the local version, pip check is clean,
  --revert names the reinstall of the release, apply removes a killed run's
  temporary, a file modified names the reinstall of the wheel, pip uninstall
  leaves the venv as it was."""
  python, site_dir = _venv(tmp_path / "fresh", *SHARED)
  empty = sorted(site_dir.rglob("*"))
  req = _requirements(tmp_path / "requirements.txt", *built)
  installed = _pip(python, "install", "--no-deps", "--require-hashes", "-r",
                   req)
  assert installed.returncode == 0, installed.stdout + installed.stderr
  checked = _run(series.REPO, "--check", python=python)
  assert checked.returncode == 0 and checked.stdout.endswith("applied\n")
  got, said = checks.run(str(python), env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert got["optax"][1] == str(site_dir / "optax" / "__init__.py"), said
  assert [c[0] for c in got["checks"] if c[1]] == list(checks.CHECKS), said
  assert re.search(rf"^optax +{VERSION}\+typestable$",
                   _pip(python, "list").stdout, re.M)
  assert _pip(python, "check").returncode == 0
  _refused(_run(series.REPO, "--revert", python=python), 2,
           f"optax {VERSION}+typestable is installed from a patched wheel: "
           f"to get the release, run: {python} -m pip install "
           f"--force-reinstall --no-deps optax==={VERSION}")
  linesearch = site_dir / LINESEARCH
  left = linesearch.with_name(f".{linesearch.name}.999999999.typestable-tmp")
  left.write_bytes(b"of a killed run")
  cleaned = _run(series.REPO, python=python)
  assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
  assert f"removed a leftover temporary: {left}" in cleaned.stdout
  linesearch.write_text(linesearch.read_text() + "# mine\n")
  _refused(_run(series.REPO, python=python), 4, "modified by someone else",
           f"{python} -m pip install --force-reinstall --no-deps DIR/{WHEEL} "
           "(--wheel DIR makes it)")
  assert _pip(python, "uninstall", "-y", "optax").returncode == 0
  assert sorted(site_dir.rglob("*")) == empty


def _uv_venv(path, *install):
  """A venv made by uv (no pip), uv pip install INSTALL, its interpreter."""
  if not UV:
    pytest.fail("no uv beside this interpreter or on PATH: pip install . "
                "(pyproject.toml)")
  uv = dict(os.environ, UV_CACHE_DIR=str(path.parent / "uv-cache"))
  subprocess.run([UV, "venv", "-q", "--python", sys.executable, path],
                 check=True, env=uv)
  subprocess.run([UV, "pip", "install", "-q", "--python", path / "bin/python",
                  "--no-deps", *install], check=True, env=uv)
  return path / "bin" / "python", uv


def test_uv_venv_hints_say_uv(repo, tmp_path):
  """A uv venv (no pip): a touched file modified: exit 4, the repair command
  is uv's, and running it gives the release back; uv's --link-mode symlink
  install: exit 5 naming --link-mode copy and --wheel, and --check says
  not applied (it only reads)."""
  python, uv = _uv_venv(tmp_path / "venv", series.wheel(VERSION))
  linesearch = next((tmp_path / "venv").glob("lib/python*/site-packages")
                    ) / LINESEARCH
  linesearch.write_text(linesearch.read_text() + "# mine\n")
  fix = (f"uv pip install --force-reinstall --no-deps optax==={VERSION} "
         f"--python {python}")
  _refused(_run(repo, python=python), 4, "modified by someone else", fix)
  subprocess.run([UV, *fix.split()[1:], "--no-index", "--find-links",
                  series.wheel(VERSION).parent],
                 check=True, env=uv, capture_output=True)
  assert _run(repo, "--check", python=python).returncode == 10
  # Its own uv cache: uv hardlinks by default, so the first venv's modified
  # file is in the first cache too.
  python, _ = _uv_venv(tmp_path / "own-cache" / "symlinked", "--link-mode",
                       "symlink", series.wheel(VERSION))
  _refused(_run(repo, python=python), 5, "symlink", "--link-mode copy",
           "--wheel DIR")
  assert _run(repo, "--check", python=python).returncode == 10  # it reads


def test_uv_installs_the_wheel(repo, built, tmp_path):
  """uv pip install --require-hashes of the wheel into a uv venv: --check
  applied, --revert names uv's reinstall, uv pip uninstall leaves nothing."""
  req = _requirements(tmp_path / "requirements.txt", *built)
  python, uv = _uv_venv(tmp_path / "venv", "--require-hashes", "-r", req)
  checked = _run(repo, "--check", python=python)
  assert checked.returncode == 0 and checked.stdout.endswith("applied\n")
  _refused(_run(repo, "--revert", python=python), 2, "to get the release, "
           "run: uv pip install --force-reinstall --no-deps optax==="
           f"{VERSION} --python {python}")
  subprocess.run([UV, "pip", "uninstall", "-q", "--python", python, "optax"],
                 check=True, env=uv)
  assert not list(next((tmp_path / "venv").glob(
      "lib/python*/site-packages")).glob("optax*"))


def test_read_only_install_names_the_wheel(repo, env, tmp_path):
  """chmod a-w (also as root): exit 5 names --wheel and the route."""
  subprocess.run(["chmod", "-R", "a-w", str(env.site / "optax")], check=True)
  _refused(_run(repo, env=env), 5, "not writable", "nothing changed",
           "tools/apply.sh --wheel DIR", "pip install --user",
           "--no-deps --target DIR2", "PYTHONPATH=DIR2")


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_python():
  """An interpreter of this Python version that user nobody can run."""
  version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
  for python in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
    if os.path.exists(python) and subprocess.run(
        [*NOBODY, python, "-c", ""], capture_output=True,
        env={"PATH": "/usr/bin:/bin"}, check=False).returncode == 0:
      return python
  pytest.skip(f"no {version} that user nobody can run")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv")
def test_read_only_route_as_another_user():
  """User nobody over root's venv (with pip, no user site): apply exits 5
  naming --wheel; --wheel DIR builds from the installed release; pip install
  --no-deps --target of the wheel and PYTHONPATH make the patched optax the
  one that imports, and --target --check says applied."""
  root = pathlib.Path(tempfile.mkdtemp())
  try:
    root.chmod(0o755)
    repo = _repo_copy(root / "repo")
    python = root / "venv" / "bin" / "python"
    subprocess.run([_nobody_python(), "-m", "venv", root / "venv"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", "--find-links", series.wheel(VERSION).parent,
                    f"optax=={VERSION}"], check=True)
    site_dir = next((root / "venv").glob("lib/python*/site-packages"))
    (site_dir / "shared.pth").write_text("\n".join(SHARED))
    (root / "home").mkdir()
    os.chown(root / "home", 65534, 65534)
    user = dict(PATH="/usr/bin:/bin", HOME=str(root / "home"), LANG="C.UTF-8",
                OPTAX_WHEEL_CACHE=str(series.WHEELS), JAX_PLATFORMS="cpu")

    def as_nobody(*cmd, **extra):
      return subprocess.run([*NOBODY, *map(str, cmd)], capture_output=True,
                            text=True, env=dict(user, **extra), check=False)

    apply = ["bash", repo / "tools" / "apply.sh", "--python", python]
    _refused(as_nobody(*apply), 5, "tools/apply.sh --wheel DIR",
             "--no-deps --target DIR2", "PYTHONPATH=DIR2")
    out, target = root / "home" / "wheels", root / "home" / "optax"
    built = as_nobody(*apply, "--wheel", out)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "files from the installed optax" in built.stdout
    installed = as_nobody(python, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", target, out / WHEEL)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    imported = as_nobody(python, "-c", "import optax; print(optax.__file__)",
                         PYTHONPATH=str(target))
    assert imported.stdout == f"{target}/optax/__init__.py\n", imported.stderr
    assert series.sha256((target / LINESEARCH).read_bytes()) == PINS[
        LINESEARCH][1]
    checked = as_nobody("bash", repo / "tools" / "apply.sh", "--python", python,
                        "--target", target, "--check")
    assert checked.returncode == 0 and checked.stdout.endswith("applied\n")
  finally:
    shutil.rmtree(root)


@pytest.mark.parametrize("args,code,words", [
    (("--release", VERSION), 2, "--release goes with --wheel"),
    (("--wheel", "out", "--target", "."), 2,
     "--wheel does not go with --target"),
    (("--wheel", ""), 2, "non-empty"),
    (("--wheel", "out", "--check"), 2, "not allowed with argument"),
    (("--wheel", "out", "--release", "9.9.9"), 3, "not a supported release"),
    (("--wheel", "out", "--release", "0.2.x"), 2, "--release takes a release"),
])
def test_wheel_usage(repo, env, tmp_path, args, code, words):
  """Bad --wheel/--release usage: one line, the documented code, no file."""
  (tmp_path / "cwd").mkdir()
  _refused(_run(repo, *args, env=env, cwd=tmp_path / "cwd"), code, words)
  assert not list((tmp_path / "cwd").iterdir())
