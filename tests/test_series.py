"""Consistency of patches/: targets, series, manifests, the upstream PR.

tools/series.py validates every series as it reads it (only modifications of
existing files under optax/); these tests add what a series must be here.
"""

import ast
import os
import re
import subprocess
import sys
import zipfile

import pytest

import series

FOLDERS = sorted({t.folder for t in series.targets()})
UPSTREAM = ["main", "main-guard", "main-strict"]
LINESEARCH = "optax/_src/linesearch.py"


def diff_lines(diff):
  return [l for l in diff.splitlines()
          if l.startswith(("+", "-")) and not l.startswith(("+++", "---"))]


def changed_lines(folder, keep):
  """The -/+ lines of FOLDER's diffs of the paths for which KEEP is true."""
  return [l for path, diffs in series.file_diffs(folder).items() if keep(path)
          for d in diffs for l in diff_lines(d)]


@pytest.mark.parametrize("release", [t.release for t in series.targets()])
def test_every_release_has_a_series_and_a_manifest(release):
  target = series.target(release)
  assert re.fullmatch(r"(\d+\.\d+\.\d+)?", target.jax_pin)
  assert series.manifest(release)  # lists exactly the series' files


@pytest.mark.parametrize("jax, python, rows", [
    ("jax>=0.4.27,<0.6", ">=3.9,<4", [("0.4.27", "3.9"), ("0.10.2", "")]),
    ("jax (>=0.5.3)", ">=3.10", [("0.5.3", ""), ("0.10.2", "")]),
    ("jaxlib>=0.4.27", ">=3.10", None),
])
def test_matrix_reads_requirements_with_more_specifiers(
    tmp_path, monkeypatch, jax, python, rows):
  wheel = tmp_path / "optax-9.9.9-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as zf:
    zf.writestr("optax-9.9.9.dist-info/METADATA",
                f"Requires-Python: {python}\nRequires-Dist: {jax}\n")
  monkeypatch.setattr(series, "wheel", lambda release: wheel)
  monkeypatch.setattr(series, "targets",
                      lambda: [series.Target("9.9.9", "x", "")])
  if rows is None:
    with pytest.raises(series.SeriesError, match="declares no Requires-Dist"):
      series.matrix("0.10.2")
  else:
    assert series.matrix("0.10.2") == [("9.9.9", "x") + r for r in rows]


@pytest.mark.parametrize("folder", FOLDERS)
def test_release_series_change_the_library_only(folder):
  paths = series.paths(folder)
  assert "optax/_src/linesearch.py" in paths
  assert not [p for p in paths if series.is_test(p)]


def code_lines(diff, release):
  """The -/+ lines of DIFF of linesearch.py, but not of its docstrings.

  A hunk is left out if its old side is a docstring of RELEASE's file.
  """
  with zipfile.ZipFile(series.wheel(release)) as wheel:
    source = wheel.read(LINESEARCH).decode()
  lines = source.splitlines()
  docstrings = set()
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and ast.get_docstring(node) is not None):
      docstrings.update(range(node.body[0].lineno - 1, node.body[0].end_lineno))
  code = []
  for hunk in re.split(r"^@@.*\n", diff, flags=re.M)[1:]:
    old = [l[1:] for l in hunk.splitlines() if l.startswith((" ", "-"))]
    starts = [i for i in range(len(lines)) if lines[i:i + len(old)] == old]
    if not (starts and set(range(starts[0], starts[0] + len(old))) <= docstrings):
      code += diff_lines(hunk)
  return code


def upstream_fix(release):
  """The code lines of main's fix of linesearch.py, against RELEASE's file."""
  return code_lines(series.file_diffs("main")[LINESEARCH][0], release)


@pytest.mark.parametrize("folder", ["0.2.7", "0.2.8"])
def test_release_fix_is_the_upstream_fix(folder):
  # The same code; main also documents the fix in a docstring.
  core = series.file_diffs(folder)[LINESEARCH][0]
  assert diff_lines(core) == upstream_fix(folder)


def test_strict_upstream_fix_is_the_release_strict_fix():
  # PR 3 (main-strict) makes the change of 0.2.8's 0002, its last patch: the
  # same new lines, and the same old code but for main's pyrefly comments and
  # line breaks.
  def code(lines):
    return "".join("".join(l[1:].split()) for l in lines
                   if not re.match(r"[-+]\s*# pyrefly:", l))

  library = [p for p in series.paths("main-strict") if not series.is_test(p)]
  assert sorted(library) == sorted(
      p for p, diffs in series.file_diffs("0.2.8").items()
      if "promote_dtypes" in diffs[-1])
  for path in library:
    (ours,) = series.file_diffs("main-strict")[path]
    ours = diff_lines(ours)
    release = diff_lines(series.file_diffs("0.2.8")[path][-1])
    for sign in "+-":
      assert code(l for l in ours if l[0] == sign) == code(
          l for l in release if l[0] == sign), (path, sign)
    assert [l for l in ours if l[0] == "+"] == [
        l for l in release if l[0] == "+"], path


def test_the_upstream_pr_is_small_and_in_optax_style():
  assert 0 < len(upstream_fix("0.2.8")) <= 30
  assert set(series.paths("main")) <= {
      LINESEARCH, "optax/_src/linesearch_test.py", "optax/_src/lbfgs_test.py"}
  assert changed_lines("main", series.is_test), "the PR adds no test"
  assert series.base_commit("main")


@pytest.mark.parametrize("folder", UPSTREAM)
def test_upstream_commit_messages(folder):
  for patch in series.patch_files(folder):
    head = patch.read_text().split("\n---\n", 1)[0]
    assert re.search(r"^Subject: \[PATCH[^\]]*\] \S", head, re.M)
    assert not re.search(r"^(Forwarded|Bug):", head, re.M), patch.name
    assert not re.search(r"\b(Fixes|Closes|Resolves) #1207\b", head), patch.name
    body = head.split("\n\n", 1)[1]
    assert len(body.strip().splitlines()) <= 16, patch.name


@pytest.mark.parametrize("folder", UPSTREAM)
def test_pr_text_is_short_and_about_optax(folder):
  text = (series.PATCHES / folder / "PR.md").read_text()
  assert len(text) <= 3500
  assert not re.search(r"tools/|optax_tests|patches/|apply\.py|typestable",
                       text)
  assert re.match(r"# \S.*\n\nPart of #1207\.", text)


def test_manifests_match_the_releases_and_the_series(tmp_path):
  for target in series.targets():
    ours = series.PATCHES / "manifest" / f"{target.release}.sha256"
    assert series.write_manifest(target.release, tmp_path).read_text() == (
        ours.read_text()), f"{ours.name}: run tools/series.py manifest"


def test_matrix_rows_minimum_jax_from_the_wheels_and_newest():
  rows = series.matrix("0.10.2")
  assert ("0.2.3", "0.2.3", "0.4.27", "3.9") in rows  # Requires-Python >=3.9
  assert ("0.2.5", "0.2.5", "0.4.27", "") in rows  # Requires-Python >=3.10
  assert ("0.2.6", "0.2.6", "0.5.3", "") in rows
  assert ("0.2.7", "0.2.7", "0.9.2", "") in rows  # its pin
  assert [r[0] for r in rows if r[2] == "0.10.2"] == [
      t.release for t in series.targets() if not t.jax_pin]


@pytest.mark.parametrize("folder", FOLDERS)
def test_release_patches_state_their_provenance(folder):
  """DEP-3 fields, not prose: where the code comes from (Origin: a series
  with a patch of the same subject), where it went (Forwarded: no, or the
  patches/main* series with a patch of the same subject), the release that
  has part of it (Applied-Upstream: newer than every release of FOLDER)."""
  releases = [t.release for t in series.targets() if t.folder == folder]

  def subjects(path):  # of the patches of folder PATH, or of one patch
    return {series.read(p).split("\n\n", 1)[0].split("] ", 1)[1].replace(
        "\n ", " ") for p in (series.patch_files(path.name)
                              if path.is_dir() else [path])}

  for patch in series.patch_files(folder):
    dep3 = series.fields(patch)
    assert {"Origin", "Forwarded"} <= set(dep3), patch.name
    assert not re.search(r"^Local (backport|patch)", series.read(patch), re.M)
    mine = subjects(patch)
    kind, _, source = dep3["Origin"].partition(", ")
    assert kind in ("upstream", "backport", "vendor", "other"), dep3["Origin"]
    if source:
      assert mine <= subjects(series.REPO / source), dep3["Origin"]
    if dep3["Forwarded"].split(",")[0] != "no":
      assert re.fullmatch(r"patches/main[\w-]*", dep3["Forwarded"])
      assert mine <= subjects(series.REPO / dep3["Forwarded"]), patch.name
    if "Applied-Upstream" in dep3:
      version = dep3["Applied-Upstream"].split(",")[0]
      assert version in [t.release for t in series.targets()]
      assert all(series.version_key(version) > series.version_key(r)
                 for r in releases), patch.name
  for upstream in UPSTREAM:  # upstream commit messages carry none
    assert not any(map(series.fields, series.patch_files(upstream)))


@pytest.mark.parametrize("value, cache", [
    ("", series.REPO / ".cache/wheels"), ("/tmp/w", "/tmp/w")])
def test_wheel_cache_variable(value, cache):
  """An empty $OPTAX_WHEEL_CACHE is the default, not the current directory."""
  said = subprocess.run(
      [sys.executable, "-c", "import series; print(series.WHEELS)"],
      cwd=series.REPO / "tools", capture_output=True, text=True, check=True,
      env=dict(os.environ, OPTAX_WHEEL_CACHE=value)).stdout.strip()
  assert said == str(cache)
