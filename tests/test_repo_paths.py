"""No tracked file names a path of a particular machine.

Home directories, this machine's work tree or mirrors, and temporary
directories made by a program (pytest, tempfile, mktemp) do not exist on
another machine: docs and code name paths of the repository, or `$TMPDIR`.
Patches are checked too (optax's files name no such path either).
"""

import pathlib
import re
import subprocess

import series

MACHINE_PATH = re.compile(
    r"/(home|Users)/[\w.-]+|/(root|work)/|[.]mirror/|/var/folders/"
    r"|/tmp/(pytest-of-|tmp\w{8}\b|[\w-]+\.[A-Za-z0-9]{6}/)")


def test_no_tracked_file_names_a_machine_path():
  files = subprocess.run(["git", "ls-files", "-z"], cwd=series.REPO,
                         capture_output=True, check=True).stdout.split(b"\0")
  hits = []
  for name in filter(None, (f.decode() for f in files)):
    path = series.REPO / name
    if (path.is_symlink() or not path.is_file()
        or path == pathlib.Path(__file__).resolve()):  # names the patterns
      continue
    text = path.read_text(errors="replace")
    hits += [f"{name}:{i}: {m.group(0)}"
             for i, line in enumerate(text.splitlines(), 1)
             for m in MACHINE_PATH.finditer(line)]
  assert not hits, "machine paths:\n" + "\n".join(hits)
