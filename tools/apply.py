"""Patches, checks or reverts the optax of a Python environment with our series.

usage: tools/apply.sh [--python PATH] [--target DIR]
                      [--check | --revert | --dry-run | --list]
       tools/apply.sh [--python PATH] --wheel DIR [--release X]
--python: default $VIRTUAL_ENV's, $CONDA_PREFIX's, python3 on PATH if it has
optax, this repository's .venv (made with the newest optax of targets.tsv);
--target: the optax source tree DIR/optax. Writes only the touched files
(owner, group, mode kept) via .NAME.PID.typestable-tmp beside them; no state.
--wheel: writes DIR/optax-X+typestable-py3-none-any.whl (X: --release, else
PYTHON's optax), checked, the same bytes on every run (README: Deploy).

exit codes (nothing is changed on 2-6; --dry-run: apply's):
   0  done or nothing to do; --check: applied; a newer optax has the fix
   1  a check that passed before fails after, or optax no longer imports:
      the released files were put back (--wheel: no wheel written)
   2  usage: bad or empty argument, no runnable Python 3.8+, no optax, no
      source tree, the checks or your PYTHONPATH import another optax;
      --revert of an optax installed from our wheel (it names the command);
      --wheel: the release's files are not installed, cached nor downloadable
   3  unsupported release, or newer and without the fix: git am a checkout
   4  a touched file or optax's version is missing or modified by someone
      else, also while this runs
   5  a touched file is a symlink (but for --check), not yours and your
      group's (unless you are root), or it or its directory is not
      writable (--wheel: DIR)
   6  patches/ is broken: missing, not UTF-8, invalid, not the pinned sha256
   7  writing failed: the files already replaced were put back
   8  putting files back failed too: the message names those still patched
  10  --check: not applied (as released)
  11  --check: partly applied (an interrupted run; apply or --revert ends it)
 130  interrupted (Ctrl-C, SIGTERM, SIGHUP): rerun it (--wheel: nothing
      written), or --revert
Test hooks: $OPTAX_TYPESTABLE_STOP_AT=checks-before, temps-written, replaced-N
or checks-after makes it SIGSTOP itself there; $OPTAX_TYPESTABLE_CHECKS=FILE
runs FILE in place of tools/checks.py (same arguments and --json file).
"""

import argparse
import contextlib
import os
import pathlib
import re
import signal
import sys
import tempfile

import checks
import locate
from locate import Failure, bytecode, say
import series
import wheel

checks.__file__ = os.environ.get("OPTAX_TYPESTABLE_CHECKS") or checks.__file__

TMP = ".{}.{}.typestable-tmp"  # .NAME.PID.typestable-tmp, beside NAME
OTHER = {"released": "patched", "patched": "released"}
GIT_AM = "to patch an optax checkout: git am patches/main/*.patch"


def classify(root, pins, fix, writing):
  """({path: 'released' | 'patched'}, {path: its bytes, read once})."""
  kinds, data = {}, {}
  for path, (released, patched) in pins.items():
    file = root / path
    if writing and os.path.realpath(file) != os.path.join(
        os.path.realpath(root), path):
      raise Failure(5, f"refused: {file} is a symlink or under one (uv's "
                    "--link-mode symlink? reinstall with --link-mode copy, or "
                    "install a patched wheel: --wheel DIR)")
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


def write(root, contents, paths, goal, where):
  """Replaces PATHS by GOAL, each after removing its bytecode (WHERE: see
  bytecode()): ([paths replaced], Failure that stopped it)."""
  tmps, done, failure = {}, [], None
  try:
    for path in paths:
      file, st = root / path, os.stat(root / path)
      tmps[path] = file.with_name(TMP.format(file.name, os.getpid()))
      with open(tmps[path], "xb") as f:
        f.write(contents[path][goal])
        os.fchown(f.fileno(), st.st_uid, st.st_gid)
        os.fchmod(f.fileno(), st.st_mode & 0o7777)
    hook("temps-written")
    for path in paths:
      now = (root / path).read_bytes()  # as classified, or GOAL already?
      if now not in (contents[path][goal], contents[path][OTHER[goal]]):
        failure = Failure(4, f"{root / path} changed while this ran")
        break
      if now != contents[path][goal]:
        for pyc in bytecode(root, path, where):  # before: no kill leaves
          with contextlib.suppress(OSError):  # one stale; the rest Python
            pyc.unlink()  # rechecks (a read-only unchecked-hash one: exit 5)
        os.replace(tmps[path], root / path)
        done.append(path)
        hook(f"replaced-{len(done)}")
  except OSError as e:
    failure = Failure(7, f"cannot write {root / path}: {e.strerror}")
  finally:  # also if interrupted
    for tmp in tmps.values():
      with contextlib.suppress(OSError):
        os.unlink(tmp)
  return done, failure


def put_back(root, contents, paths, goal, where, code, reason, rerun):
  """Writes PATHS as GOAL, then raises Failure CODE, or 8 if that fails."""
  failure = write(root, contents, paths, goal, where)[1]
  if failure is None:
    raise Failure(code, reason + (": the released files were put back"
                                  if code == 1 else ": nothing changed"))
  patched = [p for p in contents if (root / p).read_bytes() == contents[p][
      "patched"]]
  raise Failure(8, f"{reason}; putting files back failed too: "
                f"{failure.args[1]}; patched: {', '.join(patched)}; once that "
                f"is fixed, run: {rerun}")


def verdicts(python, root, target, label):
  """The names of the checks that pass, or why there are none."""
  got, output = checks.run(python, *([f"--path={root}"] if target else []),
                           env=dict(os.environ, JAX_PLATFORMS="cpu"))
  last = (output.strip().splitlines() or ["no output"])[-1].strip()
  imported = got and got["optax"] and os.path.dirname(got["optax"][1])
  why = got and got["error"] or (not imported and "the checks could not "
                                 f"run: {last}")
  if not why and os.path.realpath(imported) != os.path.realpath(root / "optax"):
    why = f"the checks imported optax from {imported}, not {root / 'optax'}"
    if label != "after":
      raise Failure(2, f"{why}: nothing changed")
  for line in [why] if why else [c[2] for c in got["checks"]]:
    say(f"  {label}: {line}")
  return why or {name for name, passed, _ in got["checks"] if passed}


def judge(before, after, folder, done):
  """Why the checks AFTER are worse than BEFORE (verdicts()'s), or "" once
  it said what the user gets: DONE anyway if they could not run before, and
  the behaviour changes of patches/FOLDER (for the user's code)."""
  if isinstance(before, set) and isinstance(after, set) and before - after:
    return f"{', '.join(sorted(before - after))} passed before and failed after"
  if isinstance(after, str) and after != before:
    return f"after: {after}"
  if isinstance(before, str):
    say(f"the checks could not run before: {done} anyway (every touched file "
        "has its pinned sha256)")
  for change in series.behaviour_changes(folder):
    say(f"behaviour change: {change}")
  return ""


def unsupported(version):
  releases = ", ".join(t.release for t in series.targets())
  return Failure(3, f"optax {version} is not a supported release (supported: "
                 f"{releases}); {GIT_AM}")


def unknown(version, python, root, target):
  """exit 0 if an optax newer than the series has the fix, else 3."""
  key = series.version_key
  if key(version) <= max(key(t.release) for t in series.targets()):
    raise unsupported(version)
  passed = verdicts(python, root, target, "checks")
  failing = [n for n in checks.MAIN if n not in passed]
  if isinstance(passed, str) or failing:
    raise Failure(3, f"optax {version} is newer than the series and " + (
        passed if isinstance(passed, str) else f"{', '.join(failing)} fail")
                  + f"; {GIT_AM}")
  say(f"optax {version} already has the fix: nothing to patch")
  return 0


def build(python, release, out_dir):
  """--wheel: the files of RELEASE (default: PYTHON's optax's), patched and
  judged as apply judges them, as a wheel in OUT_DIR."""
  found = locate.probe(python)["optax"]
  if not release and not (found and found[0]):
    raise Failure(2, f"no optax (with a version in its metadata) in the "
                  f"environment of {python}: use --release X")
  release = release or found[0].replace(wheel.LOCAL, "")
  if release not in [t.release for t in series.targets()]:
    raise unsupported(release)
  folder, pins = series.target(release).folder, series.manifest(release)
  files = wheel.release_files(found, release, pins)
  contents = versions(folder, pins, dict.fromkeys(pins, "released"), files)
  patched = wheel.patched(files, {p: contents[p]["patched"] for p in pins},
                          release)
  with tempfile.TemporaryDirectory() as tmp:
    got = []
    for label, tree in (("before", files), ("after", patched)):
      for name, data in tree.items():
        file = pathlib.Path(tmp, label, name)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
      got.append(verdicts(python, pathlib.Path(tmp, label), True, label))
  reason = judge(*got, folder, "written")
  if reason:
    raise Failure(1, f"{reason}: no wheel written")
  return wheel.write(patched, release, out_dir, python)


def run(args):
  if args.mode == "list":
    for t in series.targets():
      say(f"optax {t.release}: patches/{t.folder}"
          + (f" (with jax {t.jax_pin})" if t.jax_pin else ""))
    return 0
  python = locate.interpreter(args)
  if args.mode == "wheel":
    return build(python, args.release, args.wheel)
  found = locate.environment(python, args.target)
  version, root = found[0].replace(wheel.LOCAL, ""), found[1]
  built = (root / f"optax-{version}{wheel.LOCAL}.dist-info").is_dir()
  where = locate.user_pycache(python, root, args.target)
  folder = {t.release: t.folder for t in series.targets()}.get(version)
  say(f"{python}: optax {version}{wheel.LOCAL * built} in {root / 'optax'}"
      + (f", series patches/{folder}" if folder else ""))
  if not folder:
    return unknown(version, python, root, args.target)
  pins = series.manifest(version)
  # ===: the release itself, not our X+typestable, which == X also matches
  release = (f"rm -r {root}/optax-{version}{wheel.LOCAL}.dist-info, then "
             + locate.install(python, f"--no-deps --upgrade --target {root} "
                              f"optax==={version}") if args.target else
             locate.install(python, f"--force-reinstall --no-deps "
                            f"optax==={version}"))
  if built:  # a modified file: reinstall the wheel, as it was installed
    fix = locate.install(python, (
        f"--no-deps --upgrade --target {root}" if args.target else
        "--force-reinstall --no-deps") + f" DIR/{wheel.file_name(version)}"
                         ) + " (--wheel DIR makes it)"
  else:
    fix = (f"restore optax {version}'s file in {root}" if args.target else
           release)
  if built and args.mode == "revert":
    raise Failure(2, f"optax {version}{wheel.LOCAL} is installed from a "
                  f"patched wheel: to get the release, run: {release}")
  rerun = (f"tools/apply.sh {'--target' if args.target else '--python'} "
           f"{args.target or python} --revert (or {fix})")
  kinds, data = classify(root, pins, fix, args.mode != "check")
  goal = "released" if args.mode == "revert" else "patched"
  # Modules other touched ones import first when patching (they only gain
  # definitions), last when reverting: every prefix of the writes runs.
  order = sorted(pins, key=lambda p: -sum(
      f"from optax._src import {pathlib.Path(p).stem}\n".encode() in data[q]
      for q in pins))
  todo = [p for p in (order if goal == "patched" else order[::-1])
          if kinds[p] != goal]
  if args.mode == "check":
    code = 0 if not todo else 10 if len(todo) == len(kinds) else 11
    say({0: "applied", 10: "not applied"}.get(code, "partly applied (an "
        "interrupted run): apply or --revert completes it"))
    return code
  contents = versions(folder, pins, kinds, data)
  leftovers = [t for p in pins for t in locate.leftovers(root / p, TMP)]
  if not todo and not leftovers:
    say(f"already {'applied' if goal == 'patched' else 'as released'}: "
        "nothing changed")
    return 0
  # The files, their folders, the folders of their unchecked-hash .pyc (flags
  # 1: never rechecked by Python, so they must go), all to be writable.
  places = sorted({root / p for p in pins} | {(root / p).parent for p in pins}
                  | {c.parent for p in todo for c in bytecode(root, p, where)
                     if c.read_bytes()[4:8] == b"\1\0\0\0"})
  keepable = {(os.geteuid(), g) for g in (os.getegid(), *os.getgroups())}
  # Not writable, or (but for root) an owner and group it could not keep.
  unwritable = next((p for p in places if not os.stat(p).st_mode & 0o222
                     or not os.access(p, os.W_OK) or p.is_file() and
                     os.geteuid() and (os.stat(p).st_uid, os.stat(p).st_gid)
                     not in keepable), None)
  if args.mode == "dry-run" or unwritable:
    say(f"would write the {goal} {', '.join(todo) or 'nothing'} and remove "
        f"{len(leftovers)} leftover temporaries; writable: "
        f"{'no' if unwritable else 'yes'}")
    if unwritable:
      raise Failure(5, f"refused: {unwritable} is not writable, or not with "
                    "its owner and group kept (a read-only or shared "
                    "install?): nothing changed; instead: tools/apply.sh "
                    "--wheel DIR, then pip install --user the wheel where a "
                    "user site is enabled, or pip install --no-deps --target "
                    "DIR2 it and PYTHONPATH=DIR2")
    return 0
  for tmp in leftovers:
    tmp.unlink(missing_ok=True)  # another run may have been quicker
    say(f"removed a leftover temporary: {tmp}")
  checked = bool(todo) and goal == "patched"
  hook("checks-before")
  before = verdicts(python, root, args.target, "before") if checked else None
  if locate.environment(python, args.target) != found:
    raise Failure(4, f"optax in {root} changed while this ran: nothing changed")
  done, failure = write(root, contents, todo, goal, where)
  if failure:
    put_back(root, contents, done[::-1], OTHER[goal], where, *failure.args,
             rerun)
  say(f"wrote the {goal} {', '.join(done) or 'nothing'}")
  if not checked:
    return 0
  hook("checks-after")
  after = verdicts(python, root, args.target, "after")
  changed = [p for p in pins if (root / p).read_bytes() != contents[p][goal]]
  if changed:
    raise Failure(4, f"{', '.join(changed)} changed while the checks ran "
                  "(another run?): see --check")
  reason = judge(before, after, folder, "applied")
  if reason:
    put_back(root, contents, order[::-1], "released", where, 1, reason, rerun)
  say(f"applied patches/{folder} to optax {version} (undo: --revert)")
  return 0


class Parser(argparse.ArgumentParser):
  def error(self, message):
    raise Failure(2, f"{message} (see --help)")

  def print_help(self, file=None):
    say(__doc__.rstrip())


def main(argv):
  parser = Parser(prog="tools/apply.sh")
  for option in ("--python", "--target", "--release"):
    parser.add_argument(option)
  mode = parser.add_mutually_exclusive_group()
  for m in ("check", "revert", "dry-run", "list"):
    mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m,
                      default="apply")
  mode.add_argument("--wheel")
  for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: the checks child
    if signal.getsignal(sig) == signal.SIG_DFL:  # ends, its temporary goes
      signal.signal(sig, signal.default_int_handler)  # (nohup: ignored)
  try:
    args = parser.parse_args(argv)
    if "" in (args.python, args.target, args.wheel, args.release):
      raise Failure(2, "--python, --target, --wheel and --release take a "
                    "non-empty value")
    if args.release and not re.fullmatch(r"\d+(\.\d+)*", args.release):
      raise Failure(2, f"--release takes a release such as 0.2.8, not "
                    f"{args.release!r}")
    args.mode = "wheel" if args.wheel is not None else args.mode
    if args.release is not None and args.mode != "wheel" or (
        args.mode == "wheel" and args.target):
      raise Failure(2, "--release goes with --wheel; --wheel does not go with "
                    "--target")
    return run(args)
  except Failure as e:
    code, msg = e.args
  except series.SeriesError as e:
    code, msg = 6, f"{e}: nothing changed"
  except OSError as e:
    code, msg = 5, f"{e.filename or 'OS'}: {e.strerror or e}: nothing changed"
  except KeyboardInterrupt:
    code, msg = 130, ("interrupted: rerun it, or --revert (--wheel: nothing "
                      "written)")
  say(f"apply.py: {msg}", file=sys.stderr)
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
