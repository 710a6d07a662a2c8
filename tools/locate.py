"""Locates the optax to patch, for apply.py and wheel.py: the interpreter
(the order of apply.sh --help), what it says of its optax (PROBE: version and
folder from its metadata), the command that installs into its environment
(pip, else uv), the bytecode Python keeps of a file, the temporaries of
killed runs. Errors are Failure(exit code, one line), which apply.py prints.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import series


class Failure(Exception):
  """Exit code and a one-line message."""


def say(*text, file=None):  # its reader may be gone (| head): the run goes on
  file = file or sys.stdout  # stdout if stderr is closed (None)
  try:
    print(*text, file=file, flush=True)
  except OSError:  # the rest, and the flush at exit, to /dev/null
    os.dup2(os.open(os.devnull, os.O_WRONLY), file.fileno())


def interpreter(args):
  """The python of the environment to patch (the order of --help)."""
  prefix = os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX")
  if args.python is not None or prefix:  # a name on PATH, or a path
    python = args.python or os.path.join(prefix, "bin", "python")
    return os.path.abspath(shutil.which(python) or python)
  path, venv = python3_with_optax(), series.REPO / ".venv" / "bin" / "python"
  if path:
    return path
  if not venv.exists() and args.mode == "apply" and not args.target:
    new = max(series.targets(), key=lambda t: series.version_key(t.release))
    pins = [f"{p}=={new.jax_pin}" for p in ("jax", "jaxlib") if new.jax_pin]
    say(f"{venv}: no environment has optax: making it, optax {new.release}")
    for cmd in ([sys.executable, "-m", "venv", str(venv.parents[1])], [
        venv, "-m", "pip", "install", "-q", f"optax==={new.release}", *pins]):
      if subprocess.run(cmd, check=False).returncode != 0:
        raise Failure(2, f"could not create .venv: {cmd[2]} {cmd[3]} failed")
  if venv.exists() or args.target:
    return str(venv) if venv.exists() else sys.executable
  raise Failure(2, "no environment with optax ($VIRTUAL_ENV, $CONDA_PREFIX, "
                "python3 on PATH, .venv): use --python; apply creates .venv")


def python3_with_optax():
  """The python3 on PATH (as an absolute path) if it has optax, else None."""
  path = shutil.which("python3")
  path = path and os.path.abspath(path)  # PATH may hold a relative folder
  with contextlib.suppress(Failure):
    return path if path and probe(path)["optax"] else None


def environment(python, target):
  """(version, root holding optax/) of --target's tree or PYTHON's optax."""
  found = probe(python)["optax"]  # runs: the interpreter of the checks
  if target:
    version = version_in(pathlib.Path(target, "optax", "__init__.py"))
    if not version:
      raise Failure(2, f"not an optax source tree: {target}")
    return version, pathlib.Path(os.path.abspath(target))
  if not found:
    other = python3_with_optax()  # $CONDA_PREFIX's may not be the user's
    raise Failure(2, f"no optax in the environment of {python} (" + (
        f"the python3 on PATH has it: --python {other}; or " if other and
        other != python else "") + f"install it: "
                  f"{install(python, 'optax')})")
  version, init = found
  if not os.path.isfile(init):
    raise Failure(2, f"optax {version} of {python} is not installed as files "
                  f"({init} is missing: editable? use --target CHECKOUT)")
  key, literal = series.version_key, version_in(init)  # .dev is .dev0
  root = pathlib.Path(init).parents[1]
  strays = [str(d) for d in root.glob("optax-*.dist-info") if key(version_in(
      d / "METADATA", r"^Version:\s*(\S+)") or "") != key(literal or "")]
  if len(list(root.glob("optax-*.dist-info"))) > len(strays) > 0:
    raise Failure(4, f"stray metadata beside optax {literal}'s: rm -r "
                  + " ".join(strays))
  if not version or literal and key(literal) != key(version):
    raise Failure(4, f"optax's metadata says version {version}, its {init} "
                  f"says {literal}: reinstall optax")
  return version, root


def version_in(file, line=r"^__version__\s*=\s*['\"]([^'\"]+)['\"]"):
  """The version in FILE (by LINE: optax/__init__.py's literal), or None."""
  m = os.path.isfile(file) and re.search(
      line, pathlib.Path(file).read_text(errors="replace"), re.M)
  return m and m.group(1)


# Run by probe(): argv[1] gets the answer (a file: no banner, nothing printed
# at exit corrupts it); argv[2:], a tree to put first on sys.path (--target's).
# Only under -E does it read optax's metadata (where it is installed).
PROBE = """import sys
if sys.path[:1] == [""]: del sys.path[0]  # no ./optax, no ./json.py
import importlib.util as u, json, os
out = sys.argv[1]
sys.path[:0] = sys.argv[2:]
s, p, d = u.find_spec("optax"), sys.pycache_prefix, None
if sys.flags.ignore_environment:
  import importlib.metadata as m
  d = next(iter(m.distributions(name="optax")), None)
with open(out, "w") as f:
  json.dump({"optax": d and [d.metadata.get("Version"),
                             os.fspath(d.locate_file("optax/__init__.py"))],
             "origin": s and s.origin, "prefix": p and os.path.abspath(p),
             "pip": u.find_spec("pip") is not None}, f)"""


def probe(python, *args, isolated=True):
  """PROBE's answer of PYTHON (ISOLATED: -E, no PYTHON* variable) run with
  ARGS (here: a relative pycache prefix is the user's); Failure 2 if PYTHON
  does not run and answer as a Python 3.8+ within 120 s."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "answer.json")
    try:
      subprocess.run([python, *(["-E"] if isolated else []), "-c", PROBE, out,
                      *args], stdin=subprocess.DEVNULL,
                     capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as e:  # or TimeoutExpired
      why = getattr(e, "strerror", 0) or "no answer in 120 s"
      raise Failure(2, f"cannot run {python}: {why}") from None
    with contextlib.suppress(OSError, ValueError):
      with open(out, encoding="utf-8") as f:
        got = json.load(f)
      if isinstance(got, dict) and set(got) == {"optax", "origin", "prefix",
                                                "pip"}:
        return got
  raise Failure(2, f"not a Python 3.8+ interpreter: {python}")


def user_pycache(python, root, target):
  """(sys.pycache_prefix, spellings of ROOT) of PYTHON run with the caller's
  PYTHON* variables; exit 2 if PYTHONPATH makes it import another optax."""
  origin = prefix = None
  with contextlib.suppress(Failure):  # PYTHON* variables broke it: no prefix
    got = probe(python, *([str(root)] if target else []), isolated=False)
    origin, prefix = got["origin"], got["prefix"]
  if origin and os.path.realpath(origin) == os.path.realpath(
      root / "optax" / "__init__.py"):
    return prefix, {str(root), os.path.dirname(os.path.dirname(origin))}
  if os.environ.get("PYTHONPATH") and not target:
    other = os.path.dirname(os.path.dirname(origin)) if origin else "DIR"
    raise Failure(2, f"with your PYTHONPATH, {python} imports optax from "
                  f"{origin and os.path.dirname(origin)}, not {root / 'optax'}"
                  f": patch that one: --target {other}, or run with an empty "
                  "PYTHONPATH to patch the environment's")
  return prefix, {str(root)}


def leftovers(file, tmp):
  """The temporaries of FILE (TMP.format(its name, PID)) of a run that is
  gone or this one: regular files, so ours."""
  return [t for t in file.parent.glob(tmp.format(file.name, "*")) if
          t.is_file() and not t.is_symlink() and _gone(t.name.split(".")[-2])]


def _gone(pid):
  try:
    return pid.isdecimal() and (int(pid) == os.getpid() or os.kill(int(pid), 0))
  except (ProcessLookupError, OverflowError):
    return True
  except PermissionError:  # alive: another user's
    return False


def bytecode(root, path, where):
  """PATH's .pyc files, any Python and optimization: in __pycache__ beside it
  and in WHERE's sys.pycache_prefix tree, under each spelling of ROOT."""
  (prefix, roots), (folder, name) = where, os.path.split(path)
  return [c for d in [root / folder / "__pycache__"] + [pathlib.Path(
      prefix + os.path.join(r, folder)) for r in roots if prefix]
          for c in d.glob(name.replace(".py", ".*.pyc"))]


def install(python, what):
  """The command installing WHAT into PYTHON's environment: with its pip,
  else with uv's (a venv made by uv has no pip)."""
  with contextlib.suppress(Failure):
    if probe(python)["pip"]:
      return f"{python} -m pip install {what}"
  return f"uv pip install {what} --python {python}"
