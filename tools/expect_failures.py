"""Checks a pytest JUnit XML report of optax_tests/ run on UNPATCHED optax.

Every parameterized test method targets a bug, so each must have at least one
failing case there; otherwise the test cannot tell patched from unpatched.
Prints a table (test method: failed / passed) and exits 1 if a method never
failed, 2 on a bad report.

usage: expect_failures.py REPORT.xml
"""

import collections
import re
import sys
import xml.etree.ElementTree as ET

def main(argv):
  if len(argv) != 2:
    print("usage: expect_failures.py REPORT.xml", file=sys.stderr)
    return 2
  try:
    root = ET.parse(argv[1]).getroot()
  except (OSError, ET.ParseError) as e:
    print(f"expect_failures.py: cannot read {argv[1]}: {e}", file=sys.stderr)
    return 2
  counts = collections.defaultdict(collections.Counter)
  for case in root.iter("testcase"):
    # Parameterized names are <method><case name>, cases start with _x32/_x64.
    method = re.sub(r"_x(32|64)_.*$", "", case.get("name", ""))
    failed = case.find("failure") is not None or case.find("error") is not None
    skipped = case.find("skipped") is not None
    outcome = "failed" if failed else "skipped" if skipped else "passed"
    counts[(case.get("classname", ""), method)][outcome] += 1
  if not counts:
    print("expect_failures.py: the report has no test case", file=sys.stderr)
    return 2
  never_failed = []
  for (cls, method), c in sorted(counts.items()):
    print(f"  unpatched {cls.split('.')[-1]}.{method}: "
          f"{c['failed']} failed, {c['passed']} passed")
    if not c["failed"]:
      never_failed.append(method)
  if never_failed:
    print("these tests do not fail on unpatched optax: "
          + ", ".join(never_failed), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
