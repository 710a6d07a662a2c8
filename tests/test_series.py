"""Consistency of the patch series in patches/.

* every patch carries a Subject, and Bug/Forwarded lines (DEP-3 spirit);
* the core patch (0001) of each series touches only linesearch.py/alias.py
  (and, in backports, utils.py, where value_and_grad_from_state lived before
  it moved to linesearch.py);
* every test file a series adds to optax is byte-identical to the file of the
  same name in optax_tests/ (one source of truth);
* the main series records the upstream commit it is based on;
* every row of targets.tsv names a series, an optional jax pin and a
  manifest of exactly the released files that series modifies.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PATCHES = REPO / "patches"
SERIES = sorted(p.parent for p in PATCHES.glob("*/0001-*.patch"))
CORE_FILES = {"optax/_src/linesearch.py", "optax/_src/alias.py"}
# Up to optax 0.2.6, value_and_grad_from_state is defined in utils.py.
BACKPORT_CORE_FILES = CORE_FILES | {"optax/_src/utils.py"}


def _patches(series):
  return sorted(series.glob("*.patch"))


def _touched(text):
  return re.findall(r"^diff --git a/(\S+) b/\S+$", text, flags=re.M)


def _added_files(text):
  """Contents of the files a patch creates, keyed by path."""
  added = {}
  for chunk in re.split(r"^(?=diff --git )", text, flags=re.M):
    m = re.match(r"diff --git a/(\S+) b/\S+\nnew file mode", chunk)
    if not m:
      continue
    body = chunk.split("\n@@ ", 1)[1].split("\n", 1)[1]
    lines = []
    for line in body.split("\n"):
      if line.startswith("+"):
        lines.append(line[1:])
      elif line.startswith("-- ") or line == "--":  # format-patch signature
        break
    added[m.group(1)] = "\n".join(lines) + "\n"
  return added


def test_there_are_series():
  names = {s.name for s in SERIES}
  assert {"main", "0.2.7", "0.2.8"} <= names, names


@pytest.mark.parametrize("series", SERIES, ids=lambda s: s.name)
def test_patch_headers(series):
  for patch in _patches(series):
    head = patch.read_text().split("\ndiff --git ", 1)[0]
    assert re.search(r"^Subject: ", head, re.M), patch.name
    assert re.search(r"^Bug: https://github.com/google-deepmind/optax/", head,
                     re.M), patch.name
    assert re.search(r"^Forwarded: ", head, re.M), patch.name


@pytest.mark.parametrize("series", SERIES, ids=lambda s: s.name)
def test_core_patch_is_minimal(series):
  core = _patches(series)[0]
  touched = set(_touched(core.read_text()))
  backport = series.name in ("0.2.3", "0.2.4", "0.2.5")
  allowed = BACKPORT_CORE_FILES if backport else CORE_FILES
  assert touched and touched <= allowed, touched


@pytest.mark.parametrize("series", SERIES, ids=lambda s: s.name)
def test_added_test_files_are_the_ones_in_optax_tests(series):
  added = {}
  for patch in _patches(series):
    added.update(_added_files(patch.read_text()))
  test_files = {k: v for k, v in added.items() if k.endswith("_test.py")}
  assert test_files, "the series adds no test file"
  for path, content in test_files.items():
    ours = REPO / "optax_tests" / pathlib.Path(path).name
    assert ours.exists(), f"{path} has no source in optax_tests/"
    assert content == ours.read_text(), f"{path} differs from {ours}"


def test_main_series_records_its_base():
  text = _patches(PATCHES / "main")[0].read_text()
  assert re.search(r"^base-commit: [0-9a-f]{40}$", text, re.M)


def test_every_optax_test_file_goes_upstream():
  added = {}
  for patch in _patches(PATCHES / "main"):
    added.update(_added_files(patch.read_text()))
  shipped = {pathlib.Path(p).name for p in added}
  ours = {p.name for p in (REPO / "optax_tests").glob("*_test.py")}
  assert ours <= shipped, f"not added by patches/main: {sorted(ours - shipped)}"


def _targets():
  rows = []
  for line in (PATCHES / "targets.tsv").read_text().splitlines():
    if line and not line.startswith("#"):
      rows.append(line.split("\t"))
  return rows


def test_targets_name_a_series_a_manifest_and_a_jax_version():
  rows = _targets()
  assert rows
  for row in rows:
    assert len(row) == 3, row
    version, folder, jax_pin = row
    assert _patches(PATCHES / folder), f"{version}: no patches/{folder}"
    assert jax_pin == "" or re.fullmatch(r"\d+\.\d+\.\d+", jax_pin), row
    manifest = PATCHES / "manifest" / f"{version}.sha256"
    names = {line.split()[1] for line in manifest.read_text().splitlines()}
    modified = set()
    for patch in _patches(PATCHES / folder):
      text = patch.read_text()
      modified |= set(_touched(text)) - set(_added_files(text))
    assert names == modified, (version, names ^ modified)
  used = {row[1] for row in rows}
  release_series = {s.name for s in SERIES} - {"main"}
  assert release_series == used, release_series ^ used
