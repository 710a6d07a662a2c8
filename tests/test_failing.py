"""tools/failing.py: the one rule for "does this test fail without the fix".

test.sh (step 2, on optax_tests/) and upstream.py (on a series' new tests)
must give the same answer: a test that fails only in a subTest does not fail.
"""

import os
import re
import subprocess
import sys

import pytest

import failing
import series
import upstream

CASES = """
import unittest
from absl.testing import parameterized
import pytest


class CasesTest(parameterized.TestCase):

  @parameterized.product(dtype=('float32', 'float64'))
  def test_float64(self, dtype):
    self.assertEqual(dtype, 'float32')

  @parameterized.named_parameters(('one', 1), ('two', 2))
  def test_named(self, n):
    self.assertEqual(n, 1)

  @parameterized.parameters(1, 2)
  def test_in_subtest(self, n):
    with self.subTest('n'):
      self.assertEqual(n, 1)

  @unittest.skip('skipped')
  def test_skipped(self):
    pass


@pytest.mark.parametrize('n', [1, 2])
def test_plain(n):
  assert n == 1
"""


def test_each_case_counts_for_its_function_a_subtest_does_not(tmp_path):
  (tmp_path / "cases_test.py").write_text(CASES)
  rc, lines, counts = failing.run(["-p", "no:cacheprovider", "-n", "2"],
                                  cwd=tmp_path)
  assert rc == 1, "\n".join(lines)
  assert counts == {"test_float64": (1, 2), "test_named": (1, 2),
                    "test_in_subtest": (0, 2), "test_plain": (1, 2)}


MOD = "def f():\n  return 1\n"
TEST = """import unittest
from optax._src import mod


class ModTest(unittest.TestCase):

  def test_f_is_two(self):
    with self.subTest('f'):
      self.assertEqual(mod.f(), 2)
"""


def _git(repo, *args):
  return subprocess.run(
      ["git", "-C", str(repo), "-c", "user.name=A", "-c", "user.email=a@a",
       *args], check=True, capture_output=True, text=True).stdout.strip()


def _test_sh_says(tmp_path, test):
  """Step 2 of tools/test.sh, as written there, on TEST: (exit, output)."""
  step = re.search(r'^step "2\..*\n((?:.*\n)*?)\nstep "3\.',
                   (series.REPO / "tools/test.sh").read_text(), re.M)[1]
  here = tmp_path / "ours"
  (here / "optax_tests").mkdir(parents=True)
  (here / "optax_tests/mod_test.py").write_text(test)
  (here / "tools").symlink_to(series.REPO / "tools")
  pristine = tmp_path / "work/pristine/optax/_src"
  pristine.mkdir(parents=True)
  for name, text in (("../__init__.py", ""), ("__init__.py", ""),
                     ("mod.py", MOD)):
    (pristine / name).write_text(text)
  res = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=here,
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "py": sys.executable,
                            "work": str(tmp_path / "work")})
  return res.returncode, res.stdout + res.stderr


def _upstream_says(tmp_path, monkeypatch, capsys, test):
  """upstream.py's check_before on a series adding TEST: (raised, output)."""
  tree = tmp_path / "optax"
  files = {"optax/__init__.py": "", "optax/_src/__init__.py": "",
           "optax/_src/mod.py": MOD, "optax/_src/mod_test.py": ""}
  for path, text in files.items():
    (tree / path).parent.mkdir(parents=True, exist_ok=True)
    (tree / path).write_text(text)
  _git(tmp_path, "init", "-q", str(tree))
  _git(tree, "add", "-A")
  _git(tree, "commit", "-q", "-m", "base")
  base = _git(tree, "rev-parse", "HEAD")
  (tree / "optax/_src/mod.py").write_text(MOD.replace("1", "2"))
  (tree / "optax/_src/mod_test.py").write_text(test)
  _git(tree, "commit", "-q", "-am", "fix")
  _git(tree, "format-patch", "-q", "-o", str(tmp_path / "patches/main"),
       f"{base}..HEAD")
  monkeypatch.setattr(series, "PATCHES", tmp_path / "patches")
  try:
    upstream.check_before(tree, base, "main")
    raised = False
  except upstream.Failed:
    raised = True
  return raised, capsys.readouterr().out


@pytest.mark.parametrize("test, fails", [
    (TEST, False),
    (TEST.replace("    with self.subTest('f'):\n  ", ""), True),
], ids=["fails only in a subTest", "fails as a test"])
def test_test_sh_and_upstream_py_give_the_same_answer(
    tmp_path, monkeypatch, capsys, test, fails):
  rc, said = _test_sh_says(tmp_path, test)
  assert (rc == 0) == fails, said
  assert ("test_f_is_two: fails in 1 of 1 cases" if fails else
          "test_f_is_two: PASSES in all 1 cases") in said
  raised, said = _upstream_says(tmp_path, monkeypatch, capsys, test)
  assert raised != fails, said
  assert f"test_f_is_two: {'fails' if fails else 'PASSES'} without the fix" in (
      said)
