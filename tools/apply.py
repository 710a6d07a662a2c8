"""Patches, checks or reverts the optax of a Python environment with our series.

usage: python3 tools/apply.py [--python PATH] [--target DIR]
                              [--check | --revert | --dry-run | --list]
--python: the environment's interpreter (default: $VIRTUAL_ENV's, else .venv,
made from pyproject.toml); --target: the optax source tree DIR/optax instead.
It writes only the touched files, through .NAME.PID.typestable-tmp beside
them, and removes their bytecode: no state file, no lock (see README.md).

exit codes (nothing is changed on 2-6; --dry-run: apply's):
   0  done or nothing to do; --check: applied
   1  a check that passed before fails after, or optax no longer imports:
      the released files were put back
   2  usage: bad argument, not a Python interpreter, no optax, no source tree
   3  unsupported optax release (patch a checkout with git am instead)
   4  a touched file is missing or modified by someone else
   5  a touched file is a symlink, or a file or its directory is not writable
   6  the series is broken: invalid, does not apply, sha256 not as pinned
   7  writing failed: the files already replaced were put back
  10  --check: not applied (as released)
  11  --check: partly applied (an interrupted run; apply or --revert ends it)
 130  interrupted (Ctrl-C): rerun apply or --revert to complete the job
Test hook: $OPTAX_TYPESTABLE_STOP_AT=temps-written, replaced-N (after N
renames) or checks-after makes it SIGSTOP itself there, the first time.
"""

import argparse
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import series

REPO = series.REPO
TMP = ".{}.{}.typestable-tmp"  # .NAME.PID.typestable-tmp, beside NAME
MARK = "OPTAX-TYPESTABLE "  # built by the probe: /bin/echo cannot fake it
PROBE = ("import importlib.metadata as m, json, os\n"
         "d = next(iter(m.distributions(name='optax')), None)\n"
         "info = d and [d.version, os.fspath(d.locate_file(''))]\n"
         "print('OPTAX-' + 'TYPESTABLE', json.dumps(info))\n")
OTHER = {"released": "patched", "patched": "released"}


class Failure(Exception):
  """Exit code and a one-line message."""


def default_python(create):
  if os.environ.get("VIRTUAL_ENV"):
    return os.path.join(os.environ["VIRTUAL_ENV"], "bin", "python")
  python = REPO / ".venv" / "bin" / "python"
  if create and not python.exists():
    print(f"creating {REPO / '.venv'} from pyproject.toml")
    for cmd in ([sys.executable, "-m", "venv", str(REPO / ".venv")],
                [str(python), "-m", "pip", "install", "--quiet", str(REPO)]):
      if subprocess.run(cmd, check=False).returncode != 0:
        raise Failure(2, f"could not create .venv: {' '.join(cmd)} failed")
  return str(python) if python.exists() else sys.executable


def environment(args):
  """(version, root holding optax/, python and extra environ of the checks)."""
  python = args.python or default_python(create=not args.target)
  if args.target:
    init = pathlib.Path(args.target, "optax", "__init__.py")
    text = init.read_text(errors="replace") if init.is_file() else ""
    m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    if not m:
      raise Failure(2, f"not an optax source tree: {args.target}")
    root = pathlib.Path(os.path.abspath(args.target))
    return m.group(1), root, python, {"PYTHONPATH": str(root)}
  try:
    out = subprocess.run([python, "-c", PROBE], capture_output=True,
                         text=True, timeout=120, check=False).stdout
    info = json.loads([l for l in out.splitlines()
                       if l.startswith(MARK)][-1][len(MARK):])
    version, root = (str(x) for x in info) if info else (None, None)
  except (OSError, subprocess.SubprocessError, LookupError, ValueError,
          TypeError):
    raise Failure(2, f"not a Python 3.8+ interpreter: {python}") from None
  if version is None:
    raise Failure(2, f"no optax in the environment of {python} (install it: "
                  f"{python} -m pip install optax)")
  if not os.path.isfile(os.path.join(root, "optax", "__init__.py")):
    raise Failure(2, f"optax {version} of {python} is not installed as files "
                  f"in {root} (editable install? use --target CHECKOUT)")
  return version, pathlib.Path(root), python, {}


def classify(root, pins, fix):
  """({path: 'released' | 'patched'}, {path: its bytes, read once})."""
  kinds, data = {}, {}
  for path, (released, patched) in pins.items():
    file = root / path
    if os.path.realpath(file) != os.path.join(os.path.realpath(root), path):
      raise Failure(5, f"refused: {file} is a symlink or under one")
    data[path] = file.read_bytes() if file.is_file() else b""
    digest = series.sha256(data[path]) if file.is_file() else None
    kinds[path] = {released: "released", patched: "patched"}.get(digest)
    if kinds[path] is None:
      raise Failure(4, f"{'modified by someone else' if digest else 'missing'}"
                    f": {file}; {fix}")
  return kinds, data


def versions(folder, pins, kinds, data):
  """{path: {'released': bytes, 'patched': bytes}}, both as pinned."""
  out = {}
  for path, diffs in series.file_diffs(folder).items():
    other = OTHER[kinds[path]]
    new = series.patch_content(diffs, data[path], reverse=other == "released")
    pin = pins[path][other == "patched"]
    if new is None or series.sha256(new) != pin:
      got = "it does not apply" if new is None else series.sha256(new)[:12]
      raise Failure(6, f"patches/{folder} does not give the {other} {path} "
                    f"({got}; pinned sha256 {pin[:12]}): nothing changed")
    out[path] = {kinds[path]: data[path], other: new}
  return out


def hook(point):
  if os.environ.get("OPTAX_TYPESTABLE_STOP_AT") == point:  # the first time
    del os.environ["OPTAX_TYPESTABLE_STOP_AT"]
    os.kill(os.getpid(), signal.SIGSTOP)


def write(root, contents, paths, goal, undo=True):
  """Replaces PATHS by their GOAL version; on failure UNDOes the replaced."""
  tmps, done = {}, []
  try:
    for path in paths:
      file, mode = root / path, os.stat(root / path).st_mode & 0o7777
      tmps[path] = file.with_name(TMP.format(file.name, os.getpid()))
      with open(tmps[path], "xb") as f:
        f.write(contents[path][goal])
        os.fchmod(f.fileno(), mode)
    hook("temps-written")
    for path in paths:
      os.replace(tmps[path], root / path)
      done.append(path)
      hook(f"replaced-{len(done)}")
  except OSError as e:
    for tmp in tmps.values():
      with contextlib.suppress(OSError):
        os.unlink(tmp)
    if undo:  # may fail: exit 7 too
      write(root, contents, done, OTHER[goal], undo=False)
    raise Failure(7, f"cannot write {root / path}: {e.strerror}; " + (
        "nothing changed" if undo else "rerun apply or --revert")) from None
  for pyc in [c for p in paths for c in (root / p).parent.glob(
      f"__pycache__/{pathlib.Path(p).stem}.*.pyc")]:  # touched modules only
    with contextlib.suppress(OSError):  # if stale, Python rechecks it
      pyc.unlink()


def checks(python, extra_env, label):
  """The names of the checks that pass, or None if the checks could not run."""
  try:
    p = subprocess.run([python, str(REPO / "tools" / "checks.py")],
                       env=dict(os.environ, JAX_PLATFORMS="cpu", **extra_env),
                       capture_output=True, text=True, check=False)
  except (OSError, subprocess.SubprocessError) as e:
    p = subprocess.CompletedProcess(python, None, "", str(e))
  if p.returncode not in (0, 1) or not p.stdout.startswith("optax "):
    said = [l.strip() for l in f"{p.stderr}\n{p.stdout}".splitlines()]
    print(f"  {label}: the checks could not run: "
          f"{([l for l in said if l] or ['no output'])[-1]}")
    return None
  print("\n".join(f"  {label}: {line}" for line in p.stdout.splitlines()))
  return re.findall(r"^\s*PASS\s+(\S+)", p.stdout, re.M)


def run(args):
  if args.mode == "list":
    for t in series.targets():
      print(f"optax {t.release}: patches/{t.folder}"
            + (f" (with jax {t.jax_pin})" if t.jax_pin else ""))
    return 0
  version, root, python, checks_env = environment(args)
  try:
    folder = series.target(version).folder
  except series.SeriesError as e:
    raise Failure(3, f"{e}; to patch an optax checkout: git am "
                  "patches/main/*.patch (see CONTRIBUTING.md)") from None
  print(f"optax {version} at {root / 'optax'}, series patches/{folder}")
  pins = series.manifest(version)
  kinds, data = classify(root, pins, (
      f"{python} -m pip install --force-reinstall --no-deps optax=={version}"
      if not args.target else f"restore optax {version}'s file in {root}"))
  goal = "released" if args.mode == "revert" else "patched"
  todo = [p for p, k in kinds.items() if k != goal]
  if args.mode == "check":
    code = 0 if not todo else 10 if len(todo) == len(kinds) else 11
    print({0: "applied", 10: "not applied"}.get(code, "partly applied (an "
          "interrupted run): apply or --revert completes it"))
    return code
  contents = versions(folder, pins, kinds, data)
  leftovers = [t for p in pins for t in (root / p).parent.glob(
      TMP.format(pathlib.Path(p).name, "*"))]
  if not todo and not leftovers:
    print(f"already {'applied' if goal == 'patched' else 'as released'}: "
          "nothing changed")
    return 0
  places = sorted({root / p for p in pins} | {(root / p).parent for p in pins})
  blocker = next((p for p in places if not os.stat(p).st_mode & 0o222
                  or not os.access(p, os.W_OK)), None)
  if args.mode == "dry-run" or blocker:
    print(f"would write the {goal} {', '.join(todo) or 'nothing'} and remove "
          f"{len(leftovers)} leftover temporaries; writable: "
          f"{'no' if blocker else 'yes'}")
    if blocker:
      raise Failure(5, f"refused: {blocker} is not writable (a read-only "
                    "install?): nothing changed")
    return 0
  for tmp in leftovers:
    os.unlink(tmp)
    print(f"removed a leftover temporary: {tmp}")
  checked = bool(todo) and goal == "patched"
  before = checks(python, checks_env, "before") if checked else None
  write(root, contents, todo, goal)
  print(f"wrote the {goal} {', '.join(todo)}" if todo else "nothing else "
        "to do")
  if not checked:
    return 0
  hook("checks-after")
  after = checks(python, checks_env, "after")
  if before is None:
    print("the checks could not run before: applied anyway (every file has "
          "its pinned sha256)")
  elif after is None or any(n not in after for n in before):
    write(root, contents, pins, "released")
    raise Failure(1, ("optax imported before and not after" if after is None
                      else ", ".join(n for n in before if n not in after)
                      + " passed before and failed after")
                  + ": the released files were put back")
  print(f"applied patches/{folder} to optax {version} (undo: --revert)")
  return 0


class Parser(argparse.ArgumentParser):
  def error(self, message):
    raise Failure(2, f"{message} (see --help)")

  def print_help(self, file=None):
    print(__doc__.rstrip(), file=file)


def main(argv):
  parser = Parser(prog="tools/apply.py")
  parser.add_argument("--python")
  parser.add_argument("--target")
  mode = parser.add_mutually_exclusive_group()
  for m in ("check", "revert", "dry-run", "list"):
    mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m,
                      default="apply")
  sys.stdout.reconfigure(line_buffering=True)
  try:
    return run(parser.parse_args(argv))
  except Failure as e:
    code, msg = e.args
  except series.SeriesError as e:
    code, msg = 6, f"{e}: nothing changed"
  except OSError as e:
    code, msg = 5, f"{e.filename or ''}: {e.strerror or e}: nothing changed"
  except KeyboardInterrupt:
    code, msg = 130, "interrupted: rerun apply or --revert to complete it"
  print(f"apply.py: {msg}", file=sys.stderr)
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
