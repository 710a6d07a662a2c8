"""Does a test fail? The one rule of tools/test.sh (step 2) and upstream.py.

A test function fails if pytest reports one of its cases FAILED. A case that
fails only in a subTest is PASSED (with SUBFAILED lines): no failure, nor are
ERROR and SKIPPED. A case counts for the function it was made from (pytest's
parametrize; absl's parameters, product, named_parameters), whatever its
name. run() runs pytest with this module as a plugin (`-p failing`).

usage: failing.py NAME... -- PYTEST_ARG...
  runs `python -m pytest PYTEST_ARG...` and prints per NAME how many of its
  cases fail; exit 0 if pytest exits 1 and every NAME fails, else 1 (with
  pytest's output); 2 on bad usage.
"""

import inspect
import os
import pathlib
import subprocess
import sys
import tempfile

TOOLS = pathlib.Path(__file__).resolve().parent


def pytest_addoption(parser):
  parser.addoption("--failing-cases", help="write 'function<TAB>outcome' per "
                   "case to this file (tools/failing.py)")


def pytest_collection_modifyitems(items):
  for item in items:  # absl's cases wrap their function (functools.wraps)
    item.user_properties.append(("function",
                                 inspect.unwrap(item.obj).__name__))


class _Cases:
  """Writes the outcome of each case as pytest's summary names it."""

  def __init__(self, config, path):
    self.config, self.file = config, open(path, "w", encoding="utf-8")

  def pytest_runtest_logreport(self, report):
    word = self.config.hook.pytest_report_teststatus(
        report=report, config=self.config)[2]  # a subTest's: SUBFAILED
    word = word[0] if isinstance(word, tuple) else word  # (word, markup)
    function = dict(report.user_properties).get("function")
    if function and word in ("PASSED", "FAILED"):
      self.file.write(f"{function}\t{word}\n")

  def pytest_unconfigure(self):
    self.file.close()


def pytest_configure(config):
  path = config.getoption("failing_cases")
  if path and not hasattr(config, "workerinput"):  # xdist: the controller's
    config.pluginmanager.register(_Cases(config, path))


def run(args, cwd=None, pythonpath=""):
  """Runs pytest ARGS with the plugin: (exit code, output lines,
  {function: (failed cases, cases)})."""
  with tempfile.TemporaryDirectory() as tmp:
    cases = pathlib.Path(tmp, "cases")
    cases.touch()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "failing",
         f"--failing-cases={cases}", *args], cwd=cwd, text=True, check=False,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (pythonpath, str(TOOLS)) if p)})
    counts = {}
    for line in cases.read_text(encoding="utf-8").splitlines():
      function, outcome = line.split("\t")
      failed, total = counts.get(function, (0, 0))
      counts[function] = (failed + (outcome == "FAILED"), total + 1)
  return res.returncode, res.stdout.splitlines() or ["(no output)"], counts


def fails(counts, name):
  return counts.get(name, (0, 0))[0] > 0


def main(argv):
  if "--" not in argv[1:]:
    print("failing.py: usage: failing.py NAME... -- PYTEST_ARG...",
          file=sys.stderr)
    return 2
  names, args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  rc, lines, counts = run(args, pythonpath=os.environ.get("PYTHONPATH", ""))
  bad = [n for n in names if not fails(counts, n)]
  print("\n".join(lines if bad or rc != 1 else lines[-1:]))
  for name in names:
    failed, total = counts.get(name, (0, 0))
    print(f"{name}: " + (f"fails in {failed} of {total} cases" if failed else
                         f"PASSES in all {total} cases" if total else
                         "never runs"))
  if bad or rc != 1:
    print(f"failing.py: pytest exit {rc} (1: tests failed); do not fail: "
          f"{' '.join(bad) or 'none'}", file=sys.stderr)
  return 1 if bad or rc != 1 else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
