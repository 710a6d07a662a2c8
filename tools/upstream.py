"""Takes a series to optax: tests it on an optax checkout, exports it.

usage: upstream.py test OPTAX [--ref REF] [--series FOLDER...] [--no-lint]
       upstream.py export OPTAX BRANCH --series FOLDER [--base C] [--after F]

OPTAX: an optax checkout or bare mirror; --series: main (default), or main
main-guard main-strict for the three pull requests, in that order.
test    git am -3 in a throwaway clone at REF (default HEAD); commit messages
        checked; each new test must fail without the library changes, the
        touched test files pass; then lint and tools/checks.py
        (docs/contributing_upstream.md).
export  git format-patch of BASE..BRANCH (BASE: the series' base-commit;
        --after F: BRANCH starts with F's commits, which are left out) into
        patches/FOLDER, placeholder author, fixed date: byte-stable; refused
        if a commit message does not survive git am and git commit as is.
Exit status: 0 success, 1 a conflict, a test or lint failure, 2 usage or
setup error.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import textwrap

import checks
import failing
import series

REPO = series.REPO
AUTHOR = ("optax-typestable", "optax-typestable@users.noreply.github.com")
# The placeholder identity and fixed date of the committed series.
PLACEHOLDER = {f"GIT_{who}_{key}": value for who in ("AUTHOR", "COMMITTER")
               for key, value in (("NAME", AUTHOR[0]), ("EMAIL", AUTHOR[1]),
                                  ("DATE", "2026-11-23T00:00:00+00:00"))}
# Pinned so that the output does not depend on anyone's git configuration.
GIT_FORMAT = ["-c", "core.abbrev=8", "-c", "diff.algorithm=myers",
              "-c", "format.signature=", "-c", "diff.noprefix=false",
              "-c", "format.numbered=auto"]
PYTEST = ["-q", "-n", "2", "-p", "no:cacheprovider"]


class Failed(Exception):
  """A check failed: exit 1."""


def git(repo, *args, env=None, check=True):
  res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                       text=True, check=False,
                       env=None if env is None else {**os.environ, **env})
  if check and res.returncode != 0:
    raise series.SeriesError(f"git {' '.join(args)}: "
                             f"{(res.stderr or res.stdout).strip()}")
  return res


def clone(optax, tmp, ref):
  """A throwaway clone TMP/optax of OPTAX, detached at REF."""
  ref = git(optax, "rev-parse", "--verify", f"{ref}^{{commit}}").stdout.strip()
  git(tmp, "clone", "-q", "--shared", "--no-checkout", str(optax), "optax")
  git(pathlib.Path(tmp, "optax"), "checkout", "-q", "--detach", ref)
  return pathlib.Path(tmp, "optax")


def new_test_functions(folder):
  """Names of the test functions the series adds to optax's test files."""
  text = "\n".join(diff for path, diffs in series.file_diffs(folder).items()
                   if series.is_test(path) for diff in diffs)
  return list(dict.fromkeys(re.findall(r"^\+[ \t]*def (test\w*)\(", text,
                                       re.M)))


def apply_series(tree, folder):
  """git am -3 of FOLDER's patches: those applied; Failed on a conflict."""
  applied = []
  for patch in series.patch_files(folder):
    name = f"  {folder}/{patch.name}:"
    if (git(tree, "apply", "--check", str(patch), check=False).returncode and
        not git(tree, "apply", "-R", "--check", str(patch),
                check=False).returncode):
      print(f"{name} already in the tree, skipped")
      continue
    res = git(tree, "am", "-3", "--keep-cr", str(patch), env=PLACEHOLDER,
              check=False)
    if res.returncode:
      print(f"{name} CONFLICT")
      print(res.stdout + res.stderr)
      print(git(tree, "diff", check=False).stdout)
      git(tree, "am", "--abort", check=False)
      raise Failed(f"{folder}/{patch.name} does not apply")
    merged = "3-way" in res.stdout + res.stderr or "Falling back" in res.stderr
    print(f"{name} applied " + ("with a 3-way merge" if merged else "cleanly"))
    applied.append(patch)
  return applied


def commit_message(tree, commit):
  """The message of COMMIT in TREE, byte for byte."""
  return git(tree, "cat-file", "commit", commit).stdout.split("\n\n", 1)[1]


def message_problems(message):
  """What `git commit` would change in MESSAGE, and its cut sentences."""
  problems = []
  stripped = subprocess.run(
      ["git", "-c", "core.commentChar=#", "stripspace", "--strip-comments"],
      input=message, capture_output=True, text=True, check=True).stdout
  if stripped != message:
    problems.append("git commit would change it (it drops lines that start "
                    "with '#' as comments)")
  for paragraph in message.split("\n\n")[1:]:
    if re.match(r"[a-z]+\b(?![_.(`])", paragraph):
      problems.append(f"a sentence cut mid-way: {paragraph.split(chr(10))[0]!r}")
    if not re.search(r"[.:?!)]\n*\Z", paragraph):
      problems.append(f"a paragraph ends mid-sentence: "
                      f"{paragraph.rstrip().split(chr(10))[-1]!r}")
  return problems


def new_commits(tree, since):
  return git(tree, "rev-list", "--reverse", f"{since}..HEAD").stdout.split()


def check_messages(tree, commits, names, wanted=None):
  """Whether git commit keeps the message of each of COMMITS (NAMES: their
  patches) as it is, and (WANTED: the messages they must have) byte for
  byte."""
  failed = False
  for commit, name, want in zip(commits, names, wanted or [None] * len(names)):
    message = commit_message(tree, commit)
    problems = message_problems(message)
    if want is not None and message != want:
      problems.append("git am + git log show another message than the "
                      "commit's")
    print(f"  {name}: " + ("; ".join(problems) or "ok"))
    failed = failed or bool(problems)
  return not failed


def check_before(tree, ref, folder):
  """The series' new tests must fail with its library changes taken out."""
  names = new_test_functions(folder)
  if not names:
    print("  the series adds no test function")
    return
  library = [p for p in series.paths(folder) if not series.is_test(p)]
  git(tree, "checkout", ref, "--", *library)
  try:
    rc, lines, counts = failing.run(
        [*PYTEST, *series.test_files(folder, tree), "-k", " or ".join(names)],
        cwd=tree, pythonpath=str(tree))
  finally:
    git(tree, "checkout", "HEAD", "--", *library)
  for name in names:
    print(f"  {name}: {'fails' if failing.fails(counts, name) else 'PASSES'}"
          " without the fix")
  print(f"  {lines[-1]}")
  if rc != 1 or not all(failing.fails(counts, name) for name in names):
    raise Failed("a test of the series does not fail without its fix")


def check_after(tree, folder):
  files = series.test_files(folder, tree)
  rc, lines, _ = failing.run([*PYTEST, *files], cwd=tree, pythonpath=str(tree))
  print(f"  {' '.join(files)}: {lines[-1]}")
  if rc != 0:
    print("\n".join(l for l in lines if l.startswith(("FAILED", "ERROR"))))
    raise Failed("tests fail on the patched tree")


def lint(tree, base_tree, paths):
  """New ruff (optax's pre-commit version) and pyink findings of PATHS in
  TREE against BASE_TREE."""
  rev = re.search(r"ruff-pre-commit\s+rev: v?(\S+)",
                  (tree / ".pre-commit-config.yaml").read_text())
  ruff = f"ruff=={rev[1]}" if rev else "ruff"
  venv = REPO / ".cache" / f"lint-{ruff}"
  if not (venv / "bin" / "pyink").exists():
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "pyink", ruff],
                   check=True, capture_output=True)
  new = 0
  for tool, args, finding in (
      ("ruff", ["check", "--output-format=concise"], r"^\S+:\d+:\d+: "),
      ("pyink", ["--check", "--diff"], r"^@@ ")):
    before, after = (len(re.findall(finding, subprocess.run(
        [venv / "bin" / tool, *args, "--config", "pyproject.toml", *paths],
        cwd=root, capture_output=True, text=True, check=False).stdout, re.M))
                     for root in (base_tree, tree))
    print(f"  {tool}: {after} finding(s) in the touched files, {before} "
          "before the series")
    new += max(0, after - before)
  if new:
    raise Failed("lint finds something the series introduced")


def evidence(tree, base_tree):
  for label, root in (("before", base_tree), ("after", tree)):
    said = checks.run(sys.executable, f"--path={root}")[1].strip()
    print(f"  {label}:\n" + textwrap.indent(said or "no output", "    "))


def cmd_test(args):
  with tempfile.TemporaryDirectory(prefix="upstream.") as tmp:
    tree = clone(args.optax, tmp, args.ref)
    base_tree = pathlib.Path(tmp, "base")
    git(tree, "worktree", "add", "-q", "--detach", str(base_tree), "HEAD")
    print(git(tree, "log", "-1", "--format=optax %h %s (%cs)").stdout.strip())
    touched = []
    for folder in args.series:
      print(f"\n== {folder}: git am -3")
      before = git(tree, "rev-parse", "HEAD").stdout.strip()
      applied = apply_series(tree, folder)
      if not applied:
        print("  the series is in optax already: drop it from "
              f"patches/{folder}")
        continue
      print(f"\n== {folder}: commit messages")
      if not check_messages(tree, new_commits(tree, before),
                            [p.name for p in applied]):
        raise Failed("a commit message is not what it must be")
      print(f"\n== {folder}: the new tests without the fix")
      check_before(tree, before, folder)
      print(f"\n== {folder}: tests on the patched tree")
      check_after(tree, folder)
      touched += [p for p in series.paths(folder) if p not in touched]
    if args.lint:
      print("\n== lint (optax's configuration)")
      lint(tree, base_tree, touched)
    print("\n== evidence: tools/checks.py")
    evidence(tree, base_tree)
    print("\nall checks passed")


def cmd_export(args):
  base = args.base or series.base_commit(args.series[0])
  if not base:
    raise series.SeriesError("no --base and no base-commit in the series")
  out = series.PATCHES / args.series[0]
  with tempfile.TemporaryDirectory(prefix="export.") as tmp:
    tree = clone(args.optax, tmp, args.branch)
    git(tree, "rebase", "-q", base, "--exec",
        "git commit -q --amend --no-edit --reset-author", env=PLACEHOLDER)
    # --after: the first commits are that series' (git lists them as
    # prerequisite-patch-id under base-commit).
    commits = new_commits(tree, base)
    after = len(series.patch_files(args.after)) if args.after else 0
    start = ([base] + commits)[after]
    res = git(tree, *GIT_FORMAT, "format-patch", "--zero-commit",
              "--no-signature", f"--base={base}", "-o", f"{tmp}/out",
              f"{start}..HEAD", env=PLACEHOLDER)
    patches = [pathlib.Path(line) for line in res.stdout.split()]
    # Re-imported, each patch must give its commit's message byte for byte.
    wanted = [commit_message(tree, commit) for commit in commits[after:]]
    git(tree, "checkout", "-q", "--detach", start)
    git(tree, "am", "-q", "--keep-cr", *map(str, patches), env=PLACEHOLDER)
    if not check_messages(tree, new_commits(tree, start),
                          [p.name for p in patches], wanted):
      raise Failed(f"a commit message is not what it must be: nothing "
                   f"written to patches/{args.series[0]}")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.patch"):
      old.unlink()
    for patch in patches:
      (out / patch.name).write_bytes(patch.read_bytes())
      print((out / patch.name).relative_to(REPO))


def main(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 1)[1])
  sub = parser.add_subparsers(dest="cmd", required=True)
  for name, fn in (("test", cmd_test), ("export", cmd_export)):
    p = sub.add_parser(name)
    p.set_defaults(fn=fn)
    p.add_argument("optax", type=pathlib.Path)
    p.add_argument("--series", nargs="+", default=["main"])
  test, export = sub.choices["test"], sub.choices["export"]
  test.add_argument("--ref", default="HEAD")
  test.add_argument("--no-lint", dest="lint", action="store_false")
  export.add_argument("branch")
  export.add_argument("--base")
  export.add_argument("--after", help="the series this one applies after")
  args = parser.parse_args(argv)
  args.optax = args.optax.resolve()
  sys.stdout.reconfigure(line_buffering=True)
  try:
    args.fn(args)
  except Failed as e:
    print(f"\nFAILED: {e}")
    return 1
  except (series.SeriesError, subprocess.CalledProcessError, OSError) as e:
    print(f"upstream.py: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
