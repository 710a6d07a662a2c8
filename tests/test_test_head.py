# Copyright 2026 optax-typestable contributors.
# SPDX-License-Identifier: Apache-2.0
"""Decisions of tools/test_head.sh and tools/make_pr.sh, on tiny local repos.

Each test builds a fake "optax" git repository (a small
optax/_src/linesearch.py), a patch series made with `git format-patch`, and an
"upstream HEAD" that differs from the series base in the way under test. The
tester runs with --no-tests --no-lint: no venv, no network, no real optax.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TEST_HEAD = REPO / 'tools' / 'test_head.sh'
MAKE_PR = REPO / 'tools' / 'make_pr.sh'
DATE = '2026-11-23T00:00:00Z'
GIT_ENV = {
    'GIT_AUTHOR_NAME': 'Test',
    'GIT_AUTHOR_EMAIL': 'test@example.com',
    'GIT_COMMITTER_NAME': 'Test',
    'GIT_COMMITTER_EMAIL': 'test@example.com',
    'GIT_AUTHOR_DATE': DATE,
    'GIT_COMMITTER_DATE': DATE,
    'GIT_CONFIG_GLOBAL': os.devnull,
    'GIT_CONFIG_SYSTEM': os.devnull,
}

# 30 numbered lines around the two places the fake fix touches.
LINESEARCH = '\n'.join(
    [f'# line {i}' for i in range(1, 11)]
    + ['def init():', '  steps = jnp.asarray(0)', '  return steps']
    + [f'# line {i}' for i in range(14, 31)]
    + ['def update(value):', '  return value * 1.0', '']
)


def git(repo, *args, env=None):
  full = dict(os.environ, **GIT_ENV, **(env or {}))
  return subprocess.run(
      ['git', '-C', str(repo), *args],
      check=True,
      text=True,
      capture_output=True,
      env=full,
  ).stdout


def edit(repo, old, new, path='optax/_src/linesearch.py'):
  f = repo / path
  text = f.read_text()
  assert old in text, old
  f.write_text(text.replace(old, new, 1))


def commit(repo, msg):
  git(repo, 'add', '-A')
  git(repo, 'commit', '-q', '-m', msg)
  return git(repo, 'rev-parse', 'HEAD').strip()


@pytest.fixture
def fake(tmp_path):
  """A fake optax repo at `base`, a series of 2 patches on branch `fix`."""
  repo = tmp_path / 'optax'
  (repo / 'optax' / '_src').mkdir(parents=True)
  git(repo, 'init', '-q', '-b', 'main')
  (repo / 'optax' / '__init__.py').write_text('__version__ = "0.0.1"\n')
  (repo / 'optax' / '_src' / '__init__.py').write_text('')
  (repo / 'optax' / '_src' / 'linesearch.py').write_text(LINESEARCH)
  base = commit(repo, 'base')
  git(repo, 'checkout', '-q', '-b', 'fix')
  edit(repo, 'steps = jnp.asarray(0)', 'steps = jnp.asarray(0, dtype=int)')
  commit(repo, 'Make init type-stable.')
  (repo / 'optax' / '_src' / 'linesearch_ts_test.py').write_text(
      'def test_ok():\n  pass\n'
  )
  commit(repo, 'Add a test.')
  series = tmp_path / 'series'
  git(
      repo,
      'format-patch',
      '-q',
      '--zero-commit',
      '--no-signature',
      f'--base={base}',
      '-o',
      str(series),
      f'{base}..fix',
  )
  git(repo, 'checkout', '-q', 'main')
  return repo, series, base


def run_test_head(*args, env=None, cache, cwd=None):
  full = {
      k: v
      for k, v in os.environ.items()
      if k not in ('OPTAX_SDIST', 'TEST_HEAD_OFFLINE')
  }
  full.update(GIT_ENV, **(env or {}))
  proc = subprocess.run(
      [
          'bash',
          str(TEST_HEAD),
          '--no-tests',
          '--no-lint',
          '--cache',
          str(cache),
          *map(str, args),
      ],
      text=True,
      capture_output=True,
      env=full,
      timeout=120,
      check=False,
      cwd=cwd,
  )
  return proc.returncode, proc.stdout + proc.stderr


def test_clean_apply(fake, tmp_path):
  repo, series, base = fake
  # Relative paths are relative to the caller's directory.
  code, out = run_test_head(
      '--optax-src',
      'optax',
      '--ref',
      'main',
      '--series',
      'series',
      cache=tmp_path / 'cache',
      cwd=tmp_path,
  )
  assert code == 0, out
  assert f'tested ref:  main = {base}' in out
  assert '0001-Make-init-type-stable.patch: applied cleanly' in out
  assert '0002-Add-a-test.patch: applied cleanly' in out
  assert '(= tested commit)' in out
  # The source repository is left alone: no worktree, no new ref.
  assert git(repo, 'worktree', 'list').count('\n') == 1
  assert git(repo, 'status', '--porcelain') == ''


def test_three_way_apply(fake, tmp_path):
  repo, series, base = fake
  # Upstream changes a context line of the hunk, 2 lines away from the fixed
  # line: plain `git apply` fails, the 3-way merge succeeds.
  edit(repo, '# line 10', '# line ten')
  head = commit(repo, 'upstream moves on')
  code, out = run_test_head(
      '--optax-src', repo, '--series', series, cache=tmp_path / 'cache'
  )
  assert code == 0, out
  assert f'= {head}' in out
  assert '0001-Make-init-type-stable.patch: applied with 3-way merge' in out
  assert '0002-Add-a-test.patch: applied cleanly' in out
  assert 'the tested commit is 1 commit(s) ahead of it' in out


def test_conflict_reports_hunk(fake, tmp_path):
  repo, series, _ = fake
  edit(repo, 'steps = jnp.asarray(0)', 'steps = jnp.zeros((), jnp.int32)')
  commit(repo, 'upstream changes the same line')
  code, out = run_test_head(
      '--optax-src', repo, '--series', series, cache=tmp_path / 'cache'
  )
  assert code == 1, out
  assert '0001-Make-init-type-stable.patch: CONFLICT' in out
  assert 'conflict in optax/_src/linesearch.py' in out
  assert '<<<<<<< ' in out and '>>>>>>> ' in out
  assert 'steps = jnp.zeros((), jnp.int32)' in out  # ours
  assert 'steps = jnp.asarray(0, dtype=int)' in out  # theirs
  assert '0002-Add-a-test.patch: not attempted' in out
  assert 'FAILED: patch conflict' in out


def test_conflict_without_three_way_shows_rejected_hunk(fake, tmp_path):
  repo, series, _ = fake
  # A repository without the preimage blobs (like an sdist import): 3-way is
  # impossible, the hunk that does not apply is printed.
  other = tmp_path / 'other'
  (other / 'optax' / '_src').mkdir(parents=True)
  git(other, 'init', '-q', '-b', 'main')
  (other / 'optax' / '_src' / 'linesearch.py').write_text(
      LINESEARCH.replace('jnp.asarray(0)', 'jnp.zeros(())')
  )
  commit(other, 'unrelated history')
  code, out = run_test_head(
      '--optax-src', other, '--series', series, cache=tmp_path / 'cache'
  )
  assert code == 1, out
  assert 'CONFLICT' in out
  assert 'hunk of optax/_src/linesearch.py that does not apply' in out
  assert '+  steps = jnp.asarray(0, dtype=int)' in out


def test_already_upstream(fake, tmp_path):
  repo, series, _ = fake
  git(repo, 'merge', '-q', '--ff-only', 'fix')  # upstream took the series
  edit(repo, '# line 30', '# line thirty')
  head = commit(repo, 'and moved on')
  code, out = run_test_head(
      '--optax-src', repo, '--series', series, cache=tmp_path / 'cache'
  )
  assert code == 0, out
  assert f'ALREADY FIXED UPSTREAM at {head}' in out
  assert 'git am' not in out  # nothing was patched


def test_partly_upstream_skips_upstreamed_patches(fake, tmp_path):
  repo, series, _ = fake
  git(repo, 'cherry-pick', 'fix~1')  # only the fix, not the test
  code, out = run_test_head(
      '--optax-src', repo, '--series', series, cache=tmp_path / 'cache'
  )
  assert code == 0, out
  assert '0001-Make-init-type-stable.patch: already upstream' in out
  assert '0002-Add-a-test.patch: applied cleanly' in out
  assert 'ALREADY FIXED UPSTREAM' not in out


def make_sdist(repo, dest):
  """An sdist-like tarball (optax-0.0.1/...) of the working tree of repo."""
  sdist = dest / 'optax-0.0.1.tar.gz'
  with tarfile.open(sdist, 'w:gz') as tar:
    for path in sorted((repo / 'optax').rglob('*.py')):
      tar.add(path, arcname=f'optax-0.0.1/{path.relative_to(repo)}')
  return sdist


def test_offline_falls_back_to_sdist(fake, tmp_path):
  repo, series, _ = fake
  sdist = make_sdist(repo, tmp_path)
  code, out = run_test_head(
      '--series',
      series,
      '--url',
      'https://invalid.example/optax.git',
      '--allow-sdist-fallback',
      env={'OPTAX_SDIST': str(sdist), 'TEST_HEAD_OFFLINE': '1'},
      cache=tmp_path / 'cache',
  )
  assert code == 0, out
  assert 'THIS IS A RELEASE, NOT optax HEAD' in out
  assert 'optax-0.0.1.tar.gz' in out
  assert '!!! TESTED A RELEASE SDIST, NOT optax HEAD !!!' in out
  # No preimage blobs in an sdist repo, but the patch applies as is.
  assert '0001-Make-init-type-stable.patch: applied cleanly' in out


def test_offline_default_url_uses_sdist_option(fake, tmp_path):
  repo, series, _ = fake
  sdist = make_sdist(repo, tmp_path)
  code, out = run_test_head(
      '--series',
      series,
      '--offline',
      '--sdist',
      sdist,
      cache=tmp_path / 'cache',
  )
  assert code == 0, out
  assert 'RELEASE sdist optax-0.0.1.tar.gz (NOT HEAD)' in out


def test_explicit_url_unreachable_is_an_error(fake, tmp_path):
  _, series, _ = fake
  code, out = run_test_head(
      '--series',
      series,
      '--url',
      'https://invalid.example/optax.git',
      env={'TEST_HEAD_OFFLINE': '1'},
      cache=tmp_path / 'cache',
  )
  assert code == 2, out
  assert 'cannot reach' in out


def test_unknown_ref_is_an_error(fake, tmp_path):
  repo, series, _ = fake
  code, out = run_test_head(
      '--optax-src',
      repo,
      '--ref',
      'no-such-ref',
      '--series',
      series,
      cache=tmp_path / 'cache',
  )
  assert code == 2, out
  assert "unknown ref 'no-such-ref'" in out


def _load(name):
  spec = importlib.util.spec_from_file_location(
      name, REPO / 'tools' / f'{name}.py'
  )
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod
  spec.loader.exec_module(mod)
  return mod


def test_lint_counts_only_new_findings():
  th = _load('test_head')
  before = [
      ('a.py', 'E501', 'long', 'x = 1', 10),
      ('a.py', 'E501', 'long', 'y = 2', 20),
  ]
  # Same findings on shifted lines, one more occurrence, one new line.
  after = [
      ('a.py', 'E501', 'long', 'x = 1', 12),
      ('a.py', 'E501', 'long', 'y = 2', 22),
      ('a.py', 'E501', 'long', 'y = 2', 30),
      ('a.py', 'F841', 'unused', 'z = 3', 40),
  ]
  new = th._new_findings(after, before)  # pylint: disable=protected-access
  assert [(x[1], x[4]) for x in new] == [('E501', 30), ('F841', 40)]


def test_make_pr_regenerates_byte_identical_patches(fake, tmp_path):
  repo, _, base = fake
  out = tmp_path / 'patches'
  out.mkdir()
  (out / 'PR.md').write_text('kept\n')
  (out / '0009-stale.patch').write_text('stale\n')

  def make_pr():
    proc = subprocess.run(
        [
            'bash',
            str(MAKE_PR),
            '--from',
            str(repo),
            '--branch',
            'fix',
            '--base',
            base,
            '--series',
            str(out),
            '--no-pr',
        ],
        text=True,
        capture_output=True,
        check=False,
        env=dict(os.environ, **GIT_ENV),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout

  log = make_pr()
  assert 'removed (stale): patches/0009-stale.patch' in log
  names = sorted(p.name for p in out.glob('*.patch'))
  assert names == ['0001-Make-init-type-stable.patch', '0002-Add-a-test.patch']
  first = {n: (out / n).read_bytes() for n in names}
  text = first['0001-Make-init-type-stable.patch'].decode()
  assert text.startswith('From 0000000000000000000000000000000000000000 ')
  assert 'Date: Mon, 23 Nov 2026 00:00:00 +0000' in text
  assert f'base-commit: {base}' in text
  assert '\n-- \n' not in text  # no signature
  assert (out / 'PR.md').read_text() == 'kept\n'
  assert 'unchanged' in make_pr()
  assert {n: (out / n).read_bytes() for n in names} == first

  # A rebase that changes the author date does not churn the Date header.
  git(repo, 'checkout', '-q', 'fix')
  git(
      repo,
      'commit',
      '-q',
      '--amend',
      '--no-edit',
      '--date=2030-01-01T12:00:00Z',
  )
  git(repo, 'checkout', '-q', 'main')
  log = make_pr()
  assert 'has author date 2030-01-01' in log
  assert {n: (out / n).read_bytes() for n in names} == first


def test_make_pr_writes_pr_md_from_a_report(fake, tmp_path):
  repo, series, base = fake
  failures = [
      'm.T::test_jitted_step_compiles_once_x64_lbfgs_float32_array',
      'm.T::test_dtypes_stable_in_scan_x32_sgd_zoom_bfloat16_array',
  ]
  run = dict(
      name='our tests',
      tests=4,
      passed=4,
      failed=0,
      errors=0,
      skipped=0,
      failures=[],
  )
  case = dict(
      case='x32_float32_lbfgs_zoom',
      traces_before=2,
      traces_after=1,
      steps=15,
      identical=True,
      sha256='0123456789abcdef',
      final_value=1.0,
      error_before=None,
      error_after=None,
  )
  report = {
      'exit': 0,
      'verdict': 'ok',
      'commit': base,
      'commit_subject': 'base',
      'source': 'local',
      'is_release': False,
      'versions_after': {'jax': '0.0', 'optax': '0.0.1'},
      'apply': [
          {'name': p.name, 'status': 'clean'}
          for p in sorted(series.glob('*.patch'))
      ],
      'tests_before': dict(run, passed=2, failed=2, failures=failures),
      'tests_after': [run],
      'evidence': [case],
      'lint': {'ok': True, 'new': [], 'tools': {'ruff': '0', 'pyink': '0'}},
  }
  # A third patch that calls itself optional.
  second = (series / '0002-Add-a-test.patch').read_text()
  (series / '0003-Optional-strict-promotion.patch').write_text(
      second.replace(
          'Subject: [PATCH 2/2] Add a test.',
          'Subject: [PATCH 3/3] Optional: strict promotion.',
      )
  )
  report_path = tmp_path / 'report.json'
  report_path.write_text(__import__('json').dumps(report))
  proc = subprocess.run(
      [
          'bash',
          str(MAKE_PR),
          '--series',
          str(series),
          '--report',
          str(report_path),
      ],
      text=True,
      capture_output=True,
      check=False,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  pr = (series / 'PR.md').read_text()
  for needle in (
      '## Problem',
      '## Root cause, hunk by hunk',
      '### Before (unpatched HEAD)',
      '**2 of 4 fail**',
      '### After (patched)',
      '### Compile count',
      '| `x32_float32_lbfgs_zoom` | 2 | 1 |',
      '### Numerics',
      'bit-identical',
      '### Lint',
      'no new finding',
      'https://github.com/google-deepmind/optax/issues/1210',
      'https://github.com/google-deepmind/optax/issues/1207',
      'https://github.com/google-deepmind/optax/pull/1108',
      '| `lbfgs` | 0 | 1 |',
      '| `sgd_zoom` | 1 | 0 |',
  ):
    assert needle in pr, needle
  assert '## Optional patch' in pr
  assert '`0003-Optional-strict-promotion.patch` (Optional: strict' in pr
  assert 'Maintainers may take it or leave it' in pr
  # No curated note for the fake hunk: make_pr says so.
  assert 'no curated root cause' in proc.stdout
