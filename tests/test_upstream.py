"""tools/upstream.py on a tiny fake optax repository.

The fake has optax/_src/mod.py (f returns 1) and its test file; the branch
`fix` makes f return 2 and adds a test for it. Our tools and that series are
copied beside it, as this repository would hold them.
"""

import os
import shutil
import subprocess
import sys

import pytest

import series

REPO = series.REPO
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull,
}
MOD = "".join(f"# line {i}\n" for i in range(20)) + "def f():\n  return 1\n"
TEST = "from optax._src import mod\n\n\ndef test_exists():\n  assert mod.f\n"
NEW_TEST = "\n\ndef test_f_is_two():\n  assert mod.f() == 2\n"


def git(repo, *args):
  return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                        capture_output=True, env={**os.environ, **GIT_ENV}
                        ).stdout.strip()


def write_commit(repo, files, msg):
  for path, text in files.items():
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
  git(repo, "add", "-A")
  git(repo, "commit", "-q", "-m", msg)
  return git(repo, "rev-parse", "HEAD")


def upstream(ours, *args):
  return subprocess.run(
      [sys.executable, str(ours / "tools/upstream.py"), *map(str, args)],
      capture_output=True, text=True, check=False,
      env={**os.environ, **GIT_ENV})


@pytest.fixture(name="fake")
def fixture_fake(tmp_path):
  """(our repository copy, the fake optax repository, its base commit)."""
  ours, optax = tmp_path / "ours", tmp_path / "optax"
  shutil.copytree(REPO / "tools", ours / "tools")
  (ours / "patches").mkdir()
  git(tmp_path, "init", "-q", "-b", "main", str(optax))
  base = write_commit(optax, {"optax/__init__.py": "__version__ = '0.0'\n",
                              "optax/_src/__init__.py": "",
                              "optax/_src/mod.py": MOD,
                              "optax/_src/mod_test.py": TEST}, "base")
  git(optax, "checkout", "-q", "-b", "fix")
  write_commit(optax, {
      "optax/_src/mod.py": MOD.replace("return 1", "return 2"),
      "optax/_src/mod_test.py": TEST + NEW_TEST}, "Make f return 2.")
  git(optax, "checkout", "-q", "main")
  res = upstream(ours, "export", optax, "fix", "--series", "main",
                 "--base", base)
  assert res.returncode == 0, res.stderr
  return ours, optax, base


def test_export_is_byte_stable_and_placeholder_authored(fake):
  ours, optax, base = fake
  (patch,) = (ours / "patches/main").glob("*.patch")
  first = patch.read_bytes()
  assert upstream(ours, "export", optax, "fix", "--series", "main").returncode == 0
  assert patch.read_bytes() == first
  text = first.decode()
  assert "From: optax-typestable <optax-typestable@users.noreply" in text
  assert "Date: Mon, 23 Nov 2026 00:00:00 +0000" in text
  assert f"base-commit: {base}" in text


def test_clean_series_passes(fake):
  ours, optax, _ = fake
  res = upstream(ours, "test", optax, "--no-lint")
  assert res.returncode == 0, res.stdout + res.stderr
  assert "applied cleanly" in res.stdout
  assert "test_f_is_two: fails without the fix" in res.stdout
  assert "0001-Make-f-return-2.patch: ok" in res.stdout  # its message
  # tools/checks.py on the fake optax, after the series
  assert "\n    FAIL  seed-1210-scan-x64 " in res.stdout.split("  after:\n")[1]
  assert "all checks passed" in res.stdout


@pytest.mark.parametrize("old, new, returncode, said", [
    ("# line 19", "# line nineteen", 0, "applied with a 3-way merge"),
    ("return 1", "return 3", 1, "CONFLICT"),
], ids=["upstream edits the context", "upstream edits the same line"])
def test_upstream_changes_since_the_base(fake, old, new, returncode, said):
  ours, optax, _ = fake
  write_commit(optax, {"optax/_src/mod.py": MOD.replace(old, new)}, "edit")
  res = upstream(ours, "test", optax, "--no-lint")
  assert res.returncode == returncode, res.stdout + res.stderr
  assert said in res.stdout
  if returncode:  # git's own conflict output is shown
    assert "<<<<<<<" in res.stdout


def test_series_already_upstream_is_skipped(fake):
  ours, optax, _ = fake
  git(optax, "merge", "-q", "fix")
  res = upstream(ours, "test", optax, "--no-lint")
  assert res.returncode == 0, res.stdout + res.stderr
  assert "already in the tree" in res.stdout


SUBTEST = """

class ModTest(unittest.TestCase):

  def test_f_is_two(self):
    with self.subTest("f"):
      self.assertEqual(mod.f(), 2)
"""


@pytest.mark.parametrize("new_test", [
    NEW_TEST.replace("== 2", "> 0"), SUBTEST,
], ids=["cannot fail", "fails only in a subTest (pytest: SUBFAILED, passed)"])
def test_a_test_that_passes_without_the_fix_fails_the_run(fake, new_test):
  ours, optax, base = fake
  git(optax, "checkout", "-q", "-b", "weak", base)
  write_commit(optax, {
      "optax/_src/mod.py": MOD.replace("return 1", "return 2"),
      "optax/_src/mod_test.py": "import unittest\n" + TEST + new_test},
               "A weak test.")
  assert upstream(ours, "export", optax, "weak", "--series", "main",
                  "--base", base).returncode == 0
  res = upstream(ours, "test", optax, "--ref", "main", "--no-lint")
  assert res.returncode == 1
  assert "test_f_is_two: PASSES without the fix" in res.stdout


# The message of patches/main-guard/0001 as committed first: a line that began
# with "#1518" was dropped as a comment by git commit.
CUT = "Make f return 2.\n\nThe next commit tests it.\n\nlands first, drop it.\n"


@pytest.mark.parametrize("message, said", [
    (CUT, "a sentence cut mid-way: 'lands first, drop it.'"),
    ("Make f return 2.\n\nIf it\n#1518 lands first, drop it.\n",
     "git commit would change it"),
    ("Make f return 2.\n\nIt returns 1\n---\nnow 2.\n",
     "git am + git log show another message than the commit's"),
], ids=["sentence cut", "line starting with #", "--- line in the body"])
def test_export_refuses_a_message_that_git_changes(fake, message, said):
  ours, optax, base = fake
  before = {p.name: p.read_bytes() for p in (ours / "patches/main").iterdir()}
  git(optax, "checkout", "-q", "-b", "msg", base)
  (optax / "optax/_src/mod.py").write_text(MOD.replace("return 1", "return 2"))
  git(optax, "commit", "-qa", "--cleanup=verbatim", "-m", message)
  res = upstream(ours, "export", optax, "msg", "--series", "main", "--base",
                 base)
  assert res.returncode == 1, res.stdout + res.stderr
  assert said in res.stdout
  assert "nothing written to patches/main" in res.stdout
  assert {p.name: p.read_bytes()
          for p in (ours / "patches/main").iterdir()} == before


def test_a_committed_series_with_a_cut_message_fails_the_run(fake):
  ours, optax, _ = fake
  (patch,) = (ours / "patches/main").glob("*.patch")
  head, rest = patch.read_text().split("\n---\n", 1)
  patch.write_text(f"{head}\n\nlands first, drop it.\n---\n{rest}")
  res = upstream(ours, "test", optax, "--no-lint")
  assert res.returncode == 1, res.stdout + res.stderr
  assert "a sentence cut mid-way: 'lands first, drop it.'" in res.stdout
  assert "FAILED: a commit message is not what it must be" in res.stdout
