"""The definition of our patch series (patches/, CONTRIBUTING.md: The
series), shared by every tool and test. A series' patches are applied one
file at a time with GNU patch (no fuzz): a file is as released or as patched.

usage: series.py matrix                   the support matrix: release, folder,
                                          jax, python (TSV)
       series.py tests RELEASE TREE       test files in TREE of the files of
                                          RELEASE's series and their modules
       series.py overlay RELEASE DEST [--pristine]
                                          RELEASE's optax wheel into DEST,
                                          patched by its series
       series.py manifest [RELEASE...]    rewrite patches/manifest/: sha256 of
                                          the wheel, of each touched file
"""

import dataclasses
import hashlib
import os
import pathlib
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[1]
PATCHES = REPO / "patches"
WHEELS = pathlib.Path(os.environ.get("OPTAX_WHEEL_CACHE") or REPO / ".cache/wheels")


class SeriesError(Exception):
  """A series, a target or a file is not what it must be (one-line message)."""


class WheelError(SeriesError):
  """A release's wheel cannot be had, or is not the one its manifest pins."""


def read(path):
  """The text of a file of this repository; SeriesError naming it if it is
  missing or not UTF-8."""
  try:
    return path.read_bytes().decode()
  except (OSError, UnicodeError) as e:
    raise SeriesError(f"{path.relative_to(REPO)}: "
                      f"{getattr(e, 'strerror', 0) or 'not UTF-8'}") from None


@dataclasses.dataclass(frozen=True)
class Target:
  release: str
  folder: str
  jax_pin: str  # "" for the newest jax


def targets():
  """The supported releases, in the order of patches/targets.tsv."""
  return [Target(*(line.split("\t") + ["", ""])[:3])
          for line in read(PATCHES / "targets.tsv").splitlines()
          if line.strip() and not line.startswith("#")]


def target(release):
  for t in targets():
    if t.release == release:
      return t
  raise SeriesError(f"optax {release} is not a supported release "
                    f"(supported: {', '.join(t.release for t in targets())})")


OLDEST_PYTHON = "3.9"  # of the matrix (see matrix())


def version_key(version):
  return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _at_least(release, meta, field):
  """X of `FIELD ... >=X` in RELEASE's METADATA (more specifiers may follow)."""
  line = re.search(rf"^{field}(?![\w-])([^;\n]*)", meta, re.M)
  low = line and re.search(r">=\s*([\d.]+)", line[1])
  if not low:
    raise SeriesError(f"optax {release}: its wheel declares no {field} >=")
  return low[1]


def matrix(newest):
  """[(release, folder, jax, python)]: each release with the minimum jax its
  wheel declares (Requires-Dist) and the newest it runs with (its pin, else
  NEWEST); python: OLDEST_PYTHON on the first row if Requires-Python admits
  it, else "" (this interpreter's)."""
  rows = []
  for t in targets():
    with zipfile.ZipFile(wheel(t.release)) as zf:
      meta = zf.read(f"optax-{t.release}.dist-info/METADATA").decode()
    low = _at_least(t.release, meta, "Requires-Dist: jax")
    python = _at_least(t.release, meta, "Requires-Python:")
    old = version_key(python) <= version_key(OLDEST_PYTHON)
    rows.append((t.release, t.folder, low, OLDEST_PYTHON if old else ""))
    if version_key(t.jax_pin or newest) > version_key(low):
      rows.append((t.release, t.folder, t.jax_pin or newest, ""))
  return rows


def patch_files(folder):
  files = sorted((PATCHES / folder).glob("*.patch"))
  if not files:
    raise SeriesError(f"no *.patch in patches/{folder}")
  return files


def base_commit(folder):
  m = re.search(r"^base-commit: ([0-9a-f]{40})$",
                read(patch_files(folder)[0]), re.M)
  return m.group(1) if m else None


def fields(patch):
  """{name: value} of the DEP-3 fields (Origin:, Forwarded:, Applied-Upstream:,
  Behaviour-Change:) of one format-patch file: its description's last
  paragraph, if every line of it is a field."""
  last = read(patch).split("\n---\n", 1)[0].rsplit("\n\n", 1)[-1]
  found = [re.fullmatch(r"([A-Z][\w-]*): (.+)", l) for l in last.splitlines()]
  return {m[1]: m[2] for m in found} if all(found) else {}


def behaviour_changes(folder):
  """What FOLDER's series changes for the user's code: the Behaviour-Change:
  fields of its patches."""
  return [f["Behaviour-Change"] for f in map(fields, patch_files(folder))
          if "Behaviour-Change" in f]


# What a file's diff must start with: a modification of an existing regular
# .py file under optax/ (no new, deleted, renamed, binary or symlinked file,
# no mode change, no path outside optax/).
_DIFF_HEAD = re.compile(r"diff --git a/(optax/\S+\.py) b/\1\n"
                        r"index [0-9a-f]+\.\.[0-9a-f]+ 100644\n"
                        r"--- a/\1\n\+\+\+ b/\1\n")


def _sections(patch):
  """Yields (path, diff text) for each file of one format-patch file."""
  text = re.split(r"^base-commit: |^-- \n(?=\S*\n*\Z)", read(patch),
                  flags=re.M)[0]
  for diff in re.split(r"^(?=diff --git )", text, flags=re.M)[1:]:
    m = _DIFF_HEAD.match(diff)
    if not m or posixpath.normpath(m.group(1)) != m.group(1):
      raise SeriesError(f"{patch.name}: {diff.splitlines()[0]}: a series may "
                        "only modify existing regular .py files under optax/")
    yield m.group(1), diff


def file_diffs(folder):
  """{path: [diff of that file in each patch, in series order]}."""
  diffs = {}
  for patch in patch_files(folder):
    for path, diff in _sections(patch):
      diffs.setdefault(path, []).append(diff)
  return diffs


def paths(folder):
  return list(file_diffs(folder))


def is_test(path):
  """Whether PATH is test code (optax's *_test.py and test_*.py helpers)."""
  name = posixpath.basename(path)
  return name.endswith("_test.py") or name.startswith("test_")


def test_files(folder, tree):
  """Test files in TREE of what FOLDER touches: its own and its modules'."""
  files = []
  for path in paths(folder):
    test = path if path.endswith("_test.py") else path[:-3] + "_test.py"
    if pathlib.Path(tree, test).is_file() and test not in files:
      files.append(test)
  return files


def patch_content(diffs, content, reverse=False):
  """The bytes of one file after its diffs (reversed: before them)."""
  with tempfile.TemporaryDirectory() as tmp:
    target_file = pathlib.Path(tmp, "file")
    target_file.write_bytes(content)
    for diff in reversed(diffs) if reverse else diffs:
      cmd = ["patch", "--force", "--quiet", "--fuzz=0", "--reject-file=-",
             "--no-backup-if-mismatch", str(target_file)]
      try:
        res = subprocess.run(cmd + (["--reverse"] if reverse else []),
                             input=diff.encode(), capture_output=True,
                             check=False)
      except FileNotFoundError:
        raise SeriesError("GNU patch is needed (apt-get install patch)") from None
      if res.returncode != 0:
        return None
    return target_file.read_bytes()


def sha256(data):
  return hashlib.sha256(data).hexdigest()


def _pins(path):
  """{name: sha256 of the release's wheel, or of a file (as released, as
  patched)} of the manifest at PATH."""
  pins = {}
  for line in read(path).splitlines():
    m = re.fullmatch(r"([0-9a-f]{64}) (?:([0-9a-f]{64}) )?(\S+)", line)
    if not m:
      raise SeriesError(f"{path.relative_to(REPO)}: malformed line: {line!r}")
    pins[m[3]] = (m[1], m[2]) if m[2] else m[1]
  return pins


def manifest(release):
  """{path: (sha256 as released, sha256 as patched)} of RELEASE's series."""
  path = PATCHES / "manifest" / f"{release}.sha256"
  pins = {k: v for k, v in _pins(path).items() if isinstance(v, tuple)}
  if sorted(pins) != sorted(paths(target(release).folder)):
    raise SeriesError(f"{path.relative_to(REPO)} does not list the files of "
                      f"patches/{target(release).folder}")
  return pins


def wheel_name(version):
  """The file name of optax VERSION's wheel: PyPI's, or X+typestable ours."""
  return f"optax-{version}-py3-none-any.whl"


def wheel(release):
  """The path of RELEASE's optax wheel, downloaded from PyPI once; its sha256
  is the one its manifest pins (once there is one: write_manifest)."""
  found = WHEELS / wheel_name(release)
  pinned = PATCHES / "manifest" / f"{release}.sha256"
  pin = _pins(pinned).get(found.name, "") if pinned.exists() else None
  if pin == "":
    raise SeriesError(f"{pinned.relative_to(REPO)} pins no {found.name}")
  if not found.is_file():
    WHEELS.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--disable-pip-version-check", "-d",
         str(WHEELS), f"optax==={release}"], capture_output=True, text=True,
        check=False)
    if res.returncode != 0 or not found.is_file():
      raise WheelError(f"cannot download the optax {release} wheel from PyPI")
  if pin and sha256(found.read_bytes()) != pin:
    raise WheelError(f"{found} is not the wheel {pinned.name} pins "
                     f"({pin[:12]}): remove it")
  return found


def overlay(release, dest, folder=None):
  """Extracts RELEASE's optax into DEST, patched by FOLDER's series if any."""
  dest = pathlib.Path(dest)
  if dest.exists() and any(dest.iterdir()):
    raise SeriesError(f"{dest} exists and is not empty")
  with tempfile.TemporaryDirectory() as tmp:
    with zipfile.ZipFile(wheel(release)) as zf:
      zf.extractall(tmp)
    if folder:
      for path, diffs in file_diffs(folder).items():
        file = pathlib.Path(tmp, path)
        new = patch_content(diffs, file.read_bytes()) if file.is_file() else None
        if new is None:
          raise SeriesError(f"patches/{folder} does not apply to optax "
                            f"{release} ({path})")
        file.write_bytes(new)
    shutil.copytree(tmp, dest, dirs_exist_ok=True)
  return dest


def write_manifest(release, out_dir=PATCHES / "manifest"):
  folder = target(release).folder
  whl = wheel(release)
  lines = [f"{sha256(whl.read_bytes())} {whl.name}\n"]
  with tempfile.TemporaryDirectory() as tmp:
    overlay(release, pathlib.Path(tmp, "released"))
    overlay(release, pathlib.Path(tmp, "patched"), folder)
    for path in paths(folder):
      released = sha256(pathlib.Path(tmp, "released", path).read_bytes())
      patched = sha256(pathlib.Path(tmp, "patched", path).read_bytes())
      lines.append(f"{released} {patched} {path}\n")
  out = pathlib.Path(out_dir, f"{release}.sha256")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text("".join(lines))
  return out


def main(argv):
  cmd, args = (argv[0], argv[1:]) if argv else ("", [])
  if cmd == "matrix" and not args:
    import importlib.metadata  # pylint: disable=g-import-not-at-top
    for row in matrix(importlib.metadata.version("jax")):
      print("\t".join(row))
  elif cmd == "tests" and len(args) == 2:
    print("\n".join(test_files(target(args[0]).folder, args[1])))
  elif cmd == "overlay" and args[2:] in ([], ["--pristine"]) and len(args) > 1:
    pristine = args[2:] == ["--pristine"]
    print(overlay(args[0], args[1], None if pristine else target(args[0]).folder))
  elif cmd == "manifest":
    for release in args or [t.release for t in targets()]:
      print(write_manifest(release))
  elif argv in (["-h"], ["--help"]):
    print("usage:" + __doc__.split("usage:")[1].rstrip())
  else:
    print(f"series.py: bad usage: {' '.join(argv) or 'no command'} "
          "(series.py --help)", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main(sys.argv[1:]))
  except SeriesError as e:
    print(f"series.py: {e}", file=sys.stderr)
    sys.exit(2)
