#!/usr/bin/env python3
# Copyright 2026 optax-typestable contributors.
# SPDX-License-Identifier: Apache-2.0
"""Test the patch series of patches/main against optax HEAD (or any ref).

Front end: tools/test_head.sh. Steps, each reported:

 1. source: a git checkout or bare mirror (--optax-src), a clone of --url when
    the network allows it, or else the newest optax sdist from PyPI (or
    $OPTAX_SDIST / --sdist), turned into a git repo: a RELEASE, not HEAD.
 2. a throwaway checkout of --ref: `git clone --shared --no-checkout` of the
    source, then a detached checkout, so the source is never modified.
 3. "already upstream": a patch that reverse-applies (`git apply -R --check`)
    and does not apply forward is already in the tree. If every patch is,
    report "already fixed upstream at <commit>" and exit 0 without patching;
    if only some are, skip those and apply the rest.
 4. tests BEFORE: our optax_tests/ against the unpatched tree. If they all
    pass, the bug is fixed upstream by other means: report "already fixed
    upstream at <commit>" and exit 0 without patching.
 5. `git am -3` patch by patch: clean / applied with 3-way / conflicted (the
    conflicting hunk is printed; later patches are not attempted).
 6. lint of the touched files as upstream does (ruff with optax's
    pyproject.toml, optax's .github/check_license_headers.py, pyink with
    optax's [tool.pyink]); only findings absent from the unpatched files fail.
 7. tests AFTER on the patched tree, installed in a cached venv: optax's
    linesearch_test.py, the L-BFGS tests (lbfgs_test.py where it exists, else
    those of alias_test.py), the test module of every other module the series
    modifies (e.g. transform_test.py), test files the series adds to optax
    (unless identical to one of ours), our optax_tests/.
 8. optional evidence (--evidence): compile counts of a jitted lbfgs step and
    a bit-for-bit comparison of iterates, unpatched vs patched.

Exit status: 0 success or already fixed upstream; 1 a patch conflicts, a test
fails or lint finds something new; 2 usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_URL = 'https://github.com/google-deepmind/optax.git'
# Installed next to optax's own [project].dependencies in the test venv.
TEST_DEPS = ['pytest', 'pytest-xdist', 'scipy', 'absl-py', 'scikit-learn']
BUILD_DEPS = ['flit_core>=3.2,<4']  # optax's build backend, for offline reuse
LINE = '=' * 78
FIXED_ENV = {
    'GIT_AUTHOR_NAME': 'test-head',
    'GIT_AUTHOR_EMAIL': 'test-head@localhost',
    'GIT_COMMITTER_NAME': 'test-head',
    'GIT_COMMITTER_EMAIL': 'test-head@localhost',
    'GIT_AUTHOR_DATE': '2026-11-23T00:00:00Z',
    'GIT_COMMITTER_DATE': '2026-11-23T00:00:00Z',
    'GIT_TERMINAL_PROMPT': '0',
}


class Fatal(Exception):
  """Usage or infrastructure error: exit 2."""


def log(msg=''):
  print(msg, flush=True)


def section(title):
  log()
  log(f'--- {title} ' + '-' * max(0, 73 - len(title)))


def run(cmd, cwd=None, env=None, check=False, timeout=None, input_text=None):
  full_env = dict(os.environ)
  full_env.update(FIXED_ENV)
  if env:
    full_env.update(env)
  proc = subprocess.run(
      [str(c) for c in cmd],
      cwd=cwd,
      env=full_env,
      text=True,
      capture_output=True,
      timeout=timeout,
      input=input_text,
      check=False,
  )
  if check and proc.returncode != 0:
    raise Fatal(
        f'command failed ({proc.returncode}): {" ".join(map(str, cmd))}\n'
        f'{proc.stdout}{proc.stderr}'
    )
  return proc


def git(repo, *args, **kwargs):
  return run(['git', '-C', repo, *args], **kwargs)


# ----------------------------------------------------------------- source


@dataclasses.dataclass
class Source:
  repo: pathlib.Path  # a git repository (work tree or bare) to clone from
  kind: str  # 'local', 'url' or 'sdist'
  description: str
  is_release: bool = False


def network_ok(url, timeout=20):
  if os.environ.get('TEST_HEAD_OFFLINE') == '1':
    return False
  try:
    proc = run(
        ['git', 'ls-remote', '--exit-code', url, 'HEAD'], timeout=timeout
    )
  except subprocess.TimeoutExpired:
    return False
  return proc.returncode == 0


def newest_sdist(cache):
  """Downloads the newest optax sdist from PyPI into cache/sdist."""
  dest = cache / 'sdist'
  dest.mkdir(parents=True, exist_ok=True)
  proc = run(
      [
          sys.executable,
          '-m',
          'pip',
          'download',
          '--quiet',
          '--no-binary',
          ':all:',
          '--no-deps',
          '-d',
          dest,
          'optax',
      ],
      timeout=600,
  )
  found = sorted(dest.glob('optax-*.tar.gz'), key=_version_key)
  if proc.returncode != 0 and not found:
    raise Fatal(
        'no network to GitHub and cannot download the optax sdist '
        f'from PyPI:\n{proc.stderr}'
    )
  if not found:
    raise Fatal(f'no optax sdist in {dest}')
  return found[-1]


def _version_key(path):
  m = re.match(r'optax-([0-9.]+)', path.name)
  return tuple(int(x) for x in m.group(1).strip('.').split('.')) if m else ()


def repo_from_sdist(sdist, work):
  """Extracts an sdist into work/sdist-src and commits it to a new repo."""
  dest = work / 'sdist-src'
  with tarfile.open(sdist) as tar:
    members = tar.getmembers()
    for m in members:
      if m.name.startswith('/') or '..' in pathlib.PurePosixPath(m.name).parts:
        raise Fatal(f'unsafe path in {sdist}: {m.name}')
    tar.extractall(dest)  # noqa: S202 (checked above)
  tops = [p for p in dest.iterdir() if p.is_dir()]
  if len(tops) != 1:
    raise Fatal(f'unexpected layout of {sdist}')
  top = tops[0]
  git(top, 'init', '--quiet', check=True)
  git(top, 'add', '-A', check=True)
  git(
      top,
      'commit',
      '--quiet',
      '--no-verify',
      '-m',
      f'{top.name} from the PyPI sdist (a release, not HEAD)',
      check=True,
  )
  return top


def get_source(args, work):
  if args.optax_src:
    src = pathlib.Path(args.optax_src).resolve()
    if git(src, 'rev-parse', '--git-dir').returncode != 0:
      raise Fatal(f'--optax-src is not a git repository: {src}')
    return Source(src, 'local', f'local repository {src}')
  url = args.url or DEFAULT_URL
  if not args.offline and network_ok(url):
    dest = work / 'clone'
    log(f'cloning {url} ...')
    run(
        ['git', 'clone', '--quiet', '--no-checkout', url, dest],
        check=True,
        timeout=1800,
    )
    return Source(dest, 'url', f'clone of {url}')
  if args.url and not args.allow_sdist_fallback:
    raise Fatal(f'cannot reach {url} (offline?); give --optax-src DIR')
  sdist = args.sdist or os.environ.get('OPTAX_SDIST')
  sdist = pathlib.Path(sdist).resolve() if sdist else newest_sdist(args.cache)
  if not sdist.is_file():
    raise Fatal(f'no such sdist: {sdist}')
  banner = [
      LINE,
      '!!! NO NETWORK to GitHub and no --optax-src: testing the optax RELEASE',
      f'!!! {sdist.name} from PyPI. THIS IS A RELEASE, NOT optax HEAD.',
      '!!! Results say nothing about upstream main. Give --optax-src DIR',
      '!!! (a checkout or mirror of optax main) to test HEAD.',
      LINE,
  ]
  for b in banner:
    log(b)
  repo = repo_from_sdist(sdist, work)
  return Source(
      repo, 'sdist', f'RELEASE sdist {sdist.name} (NOT HEAD)', is_release=True
  )


def checkout(source, ref, work):
  """A throwaway clone of source at ref; the source repo is left untouched."""
  sha_proc = git(
      source.repo, 'rev-parse', '--verify', '--quiet', f'{ref}^{{commit}}'
  )
  if sha_proc.returncode != 0 and source.kind == 'sdist':
    sha_proc = git(source.repo, 'rev-parse', 'HEAD^{commit}')
  if sha_proc.returncode != 0:
    raise Fatal(f'unknown ref {ref!r} in {source.repo}')
  sha = sha_proc.stdout.strip()
  dest = work / 'optax'
  run(
      [
          'git',
          'clone',
          '--quiet',
          '--shared',
          '--no-checkout',
          source.repo,
          dest,
      ],
      check=True,
  )
  git(dest, 'checkout', '--quiet', '--detach', sha, check=True)
  git(dest, 'config', 'user.name', FIXED_ENV['GIT_AUTHOR_NAME'])
  git(dest, 'config', 'user.email', FIXED_ENV['GIT_AUTHOR_EMAIL'])
  return dest, sha


# ----------------------------------------------------------------- series


def series_files(series_dir):
  patches = sorted(pathlib.Path(series_dir).glob('*.patch'))
  if not patches:
    raise Fatal(f'no *.patch in {series_dir}')
  return patches


def base_commit(patches):
  for p in patches:
    m = re.search(r'^base-commit: ([0-9a-f]{40})$', p.read_text(), re.M)
    if m:
      return m.group(1)
  return None


def touched_files(patch_text):
  files = []
  for m in re.finditer(r'^diff --git a/(\S+) b/(\S+)$', patch_text, re.M):
    if m.group(2) not in files:
      files.append(m.group(2))
  return files


def patch_hunks(patch_text):
  """{path: [(old_start, hunk_text)]} of a patch."""
  hunks = collections.defaultdict(list)
  path = None
  cur = None
  for line in patch_text.splitlines():
    if line.startswith('diff --git '):
      path = line.split(' b/', 1)[1]
      cur = None
    elif line.startswith('@@ ') and path:
      m = re.match(r'@@ -(\d+)', line)
      cur = [line]
      hunks[path].append((int(m.group(1)) if m else 0, cur))
    elif (
        cur is not None
        and line[:1] in (' ', '+', '-', '\\')
        and not (line.startswith('-- ') or line == '--')
    ):
      cur.append(line)
    elif cur is not None:
      cur = None
  return {p: [(s, '\n'.join(h)) for s, h in hs] for p, hs in hunks.items()}


def conflict_regions(text, context=3, max_lines=40):
  lines = text.splitlines()
  out = []
  i = 0
  while i < len(lines):
    if lines[i].startswith('<<<<<<< '):
      j = i
      while j < len(lines) and not lines[j].startswith('>>>>>>> '):
        j += 1
      lo, hi = max(0, i - context), min(len(lines), j + 1 + context)
      shown = [f'{n + 1:6d}  {lines[n]}' for n in range(lo, hi)]
      if len(shown) > max_lines:  # keep both ends of a huge region
        half = max_lines // 2
        shown = (
            shown[:half]
            + [f'        ... {len(shown) - 2 * half} lines ' 'elided ...']
            + shown[-half:]
        )
      out.append('\n'.join(shown))
      i = j + 1
    else:
      i += 1
  return out


@dataclasses.dataclass
class PatchResult:
  name: str
  status: str  # clean | 3-way | conflict | upstream | not attempted
  detail: str = ''
  files: list = dataclasses.field(default_factory=list)


STATUS_TEXT = {
    'clean': 'applied cleanly',
    '3-way': 'applied with 3-way merge',
    'conflict': 'CONFLICT',
    'upstream': 'already upstream (reverse-applies), skipped',
    'not attempted': 'not attempted (an earlier patch conflicted)',
}


def check_upstream(ckout, patches):
  """Names of patches whose change is already in the unpatched tree."""
  upstream = []
  for p in patches:
    fwd = git(ckout, 'apply', '--check', p).returncode == 0
    rev = git(ckout, 'apply', '-R', '--check', p).returncode == 0
    if rev and not fwd:
      upstream.append(p.name)
  return upstream


def apply_series(ckout, patches, skip):
  results = []
  blocked = False
  for p in patches:
    text = p.read_text()
    res = PatchResult(p.name, '', files=touched_files(text))
    if p.name in skip:
      res.status = 'upstream'
    elif blocked:
      res.status = 'not attempted'
    else:
      plain = git(ckout, 'apply', '--check', p).returncode == 0
      am = git(ckout, 'am', '--quiet', '-3', p)
      if am.returncode == 0:
        res.status = 'clean' if plain else '3-way'
        if not plain:
          res.detail = (am.stdout + am.stderr).strip()
      else:
        res.status = 'conflict'
        res.detail = describe_conflict(ckout, p, text, am)
        git(ckout, 'am', '--abort')
        blocked = True
    results.append(res)
  return results


def describe_conflict(ckout, patch, text, am):
  parts = [f'git am -3 said:\n{(am.stdout + am.stderr).strip()}']
  unmerged = git(ckout, 'diff', '--name-only', '--diff-filter=U').stdout.split()
  for f in unmerged:
    content = (ckout / f).read_text(errors='replace')
    for region in conflict_regions(content):
      parts.append(
          f'conflict in {f} (ours = HEAD, theirs = the patch):\n' f'{region}'
      )
  if not unmerged:
    # No 3-way merge possible (e.g. the preimage blobs are unknown): show the
    # hunks git apply rejects.
    chk = git(ckout, 'apply', '--check', '-v', patch)
    hunks = patch_hunks(text)
    for m in re.finditer(r'patch failed: (\S+):(\d+)', chk.stderr):
      path, start = m.group(1), int(m.group(2))
      for s, h in hunks.get(path, []):
        if s == start:
          parts.append(f'hunk of {path} that does not apply:\n{h}')
    for m in re.finditer(
        r'error: (\S+): does not exist in index|'
        r'error: (\S+): No such file or directory',
        chk.stderr,
    ):
      parts.append(f'file missing in the tree: {m.group(1) or m.group(2)}')
  return '\n\n'.join(parts)


# ----------------------------------------------------------------- venvs


def read_pyproject(path):
  try:
    import tomllib  # pylint: disable=import-outside-toplevel
  except ImportError:  # Python 3.10
    try:
      import tomli as tomllib  # pylint: disable=import-outside-toplevel
    except ImportError:
      tomllib = None
  text = pathlib.Path(path).read_text()
  if tomllib:
    return tomllib.loads(text)
  # Minimal fallback: [project].dependencies only.
  m = re.search(r'^dependencies\s*=\s*\[(.*?)\]', text, re.M | re.S)
  deps = re.findall(r'"([^"]+)"', m.group(1)) if m else []
  return {'project': {'dependencies': deps}}


def cached_venv(cache, name, requirements, python):
  """A venv under cache/venvs keyed by python and requirements."""
  pyver = run(
      [python, '-c', 'import sys; print(sys.version)'], check=True
  ).stdout.strip()
  key_src = json.dumps([pyver, sorted(requirements)])
  key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
  venv = cache / 'venvs' / f'{name}-{key}'
  stamp = venv / '.complete'
  if stamp.exists():
    log(f'venv: reusing {venv}')
    return venv
  log(f'venv: creating {venv} with {" ".join(sorted(requirements))}')
  # Scripts in a venv hard-code its path, so it is built in place; the stamp
  # file, written last, marks it complete.
  if venv.exists():
    shutil.rmtree(venv)
  run([python, '-m', 'venv', venv], check=True)
  vpy = venv / 'bin' / 'python'
  run(
      [vpy, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'], timeout=1800
  )
  proc = run(
      [vpy, '-m', 'pip', 'install', '--quiet', *requirements], timeout=3600
  )
  if proc.returncode != 0:
    shutil.rmtree(venv, ignore_errors=True)
    raise Fatal(f'cannot install {requirements} into a venv:\n{proc.stderr}')
  (venv / 'requirements.json').write_text(key_src + '\n')
  stamp.write_text('ok\n')
  return venv


def install_optax(venv, ckout):
  vpy = venv / 'bin' / 'python'
  proc = run(
      [
          vpy,
          '-m',
          'pip',
          'install',
          '--quiet',
          '--no-deps',
          '--no-build-isolation',
          '--force-reinstall',
          ckout,
      ],
      timeout=1800,
  )
  if proc.returncode != 0:
    raise Fatal(f'cannot install optax from {ckout}:\n{proc.stderr}')
  ver = run(
      [
          vpy,
          '-c',
          'import optax, jax; ' 'print(optax.__version__, jax.__version__)',
      ],
      cwd=tempfile.gettempdir(),
      check=True,
  ).stdout.split()
  return {'optax': ver[0], 'jax': ver[1]}


# ----------------------------------------------------------------- tests


@dataclasses.dataclass
class TestRun:
  name: str
  cmd: list
  tests: int = 0
  passed: int = 0
  failed: int = 0
  errors: int = 0
  skipped: int = 0
  seconds: float = 0.0
  returncode: int = 0
  failures: list = dataclasses.field(default_factory=list)
  tail: str = ''

  @property
  def ok(self):
    return self.returncode == 0 and self.failed == 0 and self.errors == 0

  def summary(self):
    return (
        f'{self.passed} passed, {self.failed} failed, {self.errors} '
        f'errors, {self.skipped} skipped of {self.tests} '
        f'({self.seconds:.0f} s)'
    )


def run_pytest(venv, name, args, cwd, workers):
  vpy = venv / 'bin' / 'python'
  fd, xml_path = tempfile.mkstemp(suffix='.xml')
  os.close(fd)
  cmd = [
      vpy,
      '-m',
      'pytest',
      '-q',
      '-p',
      'no:cacheprovider',
      '-n',
      str(workers),
      f'--junitxml={xml_path}',
      *args,
  ]
  t0 = time.time()
  proc = run(
      cmd,
      cwd=cwd,
      timeout=4 * 3600,
      env={'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')},
  )
  res = TestRun(
      name,
      [str(c) for c in cmd[3:]],
      seconds=time.time() - t0,
      returncode=proc.returncode,
  )
  try:
    root = ET.parse(xml_path).getroot()
    for case in root.iter('testcase'):
      res.tests += 1
      kinds = {child.tag for child in case}
      if 'failure' in kinds:
        res.failed += 1
        res.failures.append(f"{case.get('classname')}::{case.get('name')}")
      elif 'error' in kinds:
        res.errors += 1
        res.failures.append(f"{case.get('classname')}::{case.get('name')}")
      elif 'skipped' in kinds:
        res.skipped += 1
      else:
        res.passed += 1
  except (ET.ParseError, FileNotFoundError):
    res.errors += 1
  finally:
    os.unlink(xml_path)
  # pytest exit 5 = nothing collected: an error for us.
  if proc.returncode == 5 or res.tests == 0:
    res.errors += 1
  res.tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
  return res


def our_test_paths(tests_dir):
  return sorted(pathlib.Path(tests_dir).glob('*_test.py'))


def upstream_test_runs(ckout, files):
  """optax's own tests to run on the patched tree, as (name, pytest args).

  linesearch_test.py, the L-BFGS tests (lbfgs_test.py where optax has it,
  else the L-BFGS tests of alias_test.py), and the test module of every other
  module the series modifies (e.g. transform_test.py for transform.py).
  """
  src = ckout / 'optax' / '_src'
  runs = [
      ('optax linesearch_test.py', ['--pyargs', 'optax._src.linesearch_test'])
  ]
  if (src / 'lbfgs_test.py').exists():
    runs.append(('optax lbfgs_test.py', ['--pyargs', 'optax._src.lbfgs_test']))
  else:
    runs.append(
        (
            'optax alias_test.py -k "lbfgs or LBFGS"',
            ['--pyargs', 'optax._src.alias_test', '-k', 'lbfgs or LBFGS'],
        )
    )
  for f in files:
    test = pathlib.Path(f[:-3] + '_test.py')
    mod = '.'.join(test.with_suffix('').parts)
    if (
        f.startswith('optax/')
        and f.endswith('.py')
        and not f.endswith('_test.py')
        and (ckout / test).exists()
        and mod not in ('optax._src.linesearch_test', 'optax._src.lbfgs_test')
    ):
      runs.append((f'optax {test.name}', ['--pyargs', mod]))
  return runs


def series_test_modules(ckout, results, ours):
  """Test files the applied series adds under optax/, unless ours has them."""
  our_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in ours}
  mods = []
  for r in results:
    if r.status not in ('clean', '3-way'):
      continue
    for f in r.files:
      path = ckout / f
      if (
          f.startswith('optax/')
          and f.endswith('_test.py')
          and path.exists()
          and hashlib.sha256(path.read_bytes()).hexdigest() not in our_hashes
      ):
        mods.append(f[:-3].replace('/', '.'))
  return mods


def print_run(res):
  state = 'PASS' if res.ok else 'FAIL'
  log(f'[{state}] {res.name}: {res.summary()}')
  if not res.ok:
    for f in res.failures[:15]:
      log(f'    failed: {f}')
    if len(res.failures) > 15:
      log(f'    ... and {len(res.failures) - 15} more')
    if res.errors and not res.failures:
      log('    ' + res.tail.replace('\n', '\n    '))


# ----------------------------------------------------------------- lint


def _baseline_dir(ckout, base_sha, files, work, name):
  """The unpatched versions of files, at the same relative paths."""
  dest = work / name
  present = []
  for f in files:
    blob = git(ckout, 'show', f'{base_sha}:{f}')
    if blob.returncode == 0:
      (dest / f).parent.mkdir(parents=True, exist_ok=True)
      (dest / f).write_text(blob.stdout)
      present.append(f)
  return dest, present


def _ruff(venv, config, root, files):
  if not files:
    return []
  proc = run(
      [
          venv / 'bin' / 'ruff',
          'check',
          '--no-cache',
          '--config',
          config,
          '--output-format',
          'json',
          '--exit-zero',
          *files,
      ],
      cwd=root,
  )
  try:
    items = json.loads(proc.stdout or '[]')
  except json.JSONDecodeError as e:
    raise Fatal(f'ruff output is not JSON: {proc.stdout}{proc.stderr}') from e
  out = []
  for it in items:
    f = os.path.relpath(it['filename'], root)
    row = it['location']['row']
    src = (pathlib.Path(root) / f).read_text().splitlines()
    text = src[row - 1].strip() if 0 < row <= len(src) else ''
    out.append((f, it['code'] or 'syntax', it['message'], text, row))
  return out


def _pyink(venv, config, root, files):
  """Lines pyink would change, as (file, '-' + line) findings."""
  out = []
  for f in files:
    proc = run(
        [
            venv / 'bin' / 'pyink',
            '--config',
            config,
            '--check',
            '--diff',
            '--quiet',
            f,
        ],
        cwd=root,
    )
    if proc.returncode not in (0, 1):
      out.append((f, 'pyink-error', proc.stderr.strip(), '', 0))
      continue
    for line in proc.stdout.splitlines():
      if line.startswith('-') and not line.startswith('---'):
        out.append((f, 'pyink', 'would reformat', line[1:].strip(), 0))
  return out


def _license(checker, root, files):
  out = []
  for f in files:
    if not f.startswith('optax/'):
      continue  # upstream checks ./optax/**/*.py only
    # pylint: disable-next=protected-access
    if not checker._check_license_header(str(pathlib.Path(root) / f)):
      out.append((f, 'license', 'no proper license header', '', 1))
  return out


def _new_findings(after, before):
  """Findings of after that are not in before (as multisets, by line text)."""
  budget = collections.Counter(x[:4] for x in before)
  new = []
  for x in after:
    if budget[x[:4]] > 0:
      budget[x[:4]] -= 1
    else:
      new.append(x)
  return new


def ruff_version_of(ckout):
  """The ruff pinned by optax's pre-commit config (else the newest)."""
  cfg = ckout / '.pre-commit-config.yaml'
  if cfg.exists():
    m = re.search(
        r'astral-sh/ruff-pre-commit\s*\n\s*rev:\s*v?([0-9.]+)', cfg.read_text()
    )
    if m:
      return m.group(1)
  return None


def lint(args, ckout, base_sha, files, work):
  py_files = [f for f in files if f.endswith('.py') and (ckout / f).exists()]
  report = {'files': py_files, 'tools': {}, 'new': [], 'ok': True}
  if not py_files:
    log('lint: no Python file touched')
    return report
  config = ckout / 'pyproject.toml'
  ruff_ver = ruff_version_of(ckout)
  reqs = [f'ruff=={ruff_ver}' if ruff_ver else 'ruff', 'pyink']
  venv = cached_venv(args.cache, 'lint', reqs, args.python)
  vers = run(
      [venv / 'bin' / 'python', '-m', 'pip', 'list', '--format=json'],
      check=True,
  ).stdout
  vers = {p['name'].lower(): p['version'] for p in json.loads(vers)}
  report['tools'] = {k: vers.get(k) for k in ('ruff', 'pyink')}
  base_root, base_files = _baseline_dir(
      ckout, base_sha, py_files, work, 'lint-base'
  )
  checks = {}
  checks['ruff'] = (
      _ruff(venv, config, ckout, py_files),
      _ruff(venv, config, base_root, base_files),
  )
  checks['pyink'] = (
      _pyink(venv, config, ckout, py_files),
      _pyink(venv, config, base_root, base_files),
  )
  checker_path = ckout / '.github' / 'check_license_headers.py'
  if checker_path.exists():
    spec = importlib.util.spec_from_file_location(
        '_optax_license', checker_path
    )
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    checks['license'] = (
        _license(checker, ckout, py_files),
        _license(checker, base_root, base_files),
    )
  else:
    log(
        'lint: NOTE no .github/check_license_headers.py in this source '
        '(sdist?): license-header check skipped'
    )
  for tool, (after, before) in checks.items():
    new = _new_findings(after, before)
    report['new'] += new
    log(
        f'lint {tool}: {len(after)} finding(s) in the patched files, '
        f'{len(before)} in the unpatched ones, {len(new)} new'
    )
    for f, code, msg, text, row in new:
      where = f'{f}:{row}' if row else f
      log(
          f'    NEW {where}: {code} {msg}'
          + (f'\n        {text}' if text else '')
      )
  report['ok'] = not report['new']
  report['new'] = [list(x) for x in report['new']]
  return report


# ----------------------------------------------------------------- evidence


def evidence(venv, out_json):
  script = REPO / 'tools' / 'pr_evidence.py'
  proc = run(
      [venv / 'bin' / 'python', script, out_json],
      cwd=tempfile.gettempdir(),
      timeout=3600,
      env={'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')},
  )
  if proc.returncode != 0:
    raise Fatal(f'evidence script failed:\n{proc.stdout}{proc.stderr}')
  return json.loads(pathlib.Path(out_json).read_text())


def compare_evidence(before, after):
  rows = []
  for name, b in before['cases'].items():
    a = after['cases'].get(name)
    if a is None:
      continue
    rows.append(
        {
            'case': name,
            'traces_before': b['traces'],
            'traces_after': a['traces'],
            'steps': b['steps'],
            'identical': (
                b['iterates_sha256'] == a['iterates_sha256']
                and b.get('error') is None
                and a.get('error') is None
            ),
            'sha256': a['iterates_sha256'][:16],
            'final_value': a['final_value'],
            'error_before': b.get('error'),
            'error_after': a.get('error'),
        }
    )
  return rows


# ----------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog='tools/test_head.sh',
      description='Apply patches/main to optax HEAD and test it.',
  )
  src = p.add_mutually_exclusive_group()
  src.add_argument(
      '--optax-src',
      metavar='DIR',
      help='a git checkout or bare mirror of optax',
  )
  src.add_argument('--url', help=f'clone this repo (default {DEFAULT_URL})')
  p.add_argument(
      '--ref', default='HEAD', help='commit-ish to test (default HEAD)'
  )
  p.add_argument(
      '--series',
      default=str(REPO / 'patches' / 'main'),
      help='patch series directory (default patches/main)',
  )
  p.add_argument(
      '--our-tests',
      default=str(REPO / 'optax_tests'),
      help='our test directory (default optax_tests/)',
  )
  p.add_argument(
      '--sdist',
      help='offline fallback sdist (default: '
      '$OPTAX_SDIST, else the newest from PyPI)',
  )
  p.add_argument(
      '--offline',
      action='store_true',
      help='do not try the network for --url / the default URL',
  )
  p.add_argument(
      '--allow-sdist-fallback',
      action='store_true',
      help='with --url: fall back to the sdist when unreachable',
  )
  p.add_argument(
      '--no-tests',
      action='store_true',
      help='apply and lint only; no venv, no pytest',
  )
  p.add_argument('--no-lint', action='store_true', help='skip the lint step')
  p.add_argument(
      '--evidence',
      action='store_true',
      help='also run tools/pr_evidence.py before/after',
  )
  p.add_argument('--workers', default='2', help='pytest -n (default 2)')
  p.add_argument(
      '--cache',
      default=os.environ.get('TEST_HEAD_CACHE', str(REPO / '.cache')),
      help='venv/sdist cache',
  )
  p.add_argument(
      '--python',
      default=os.environ.get('PYTHON', sys.executable),
      help='python used to create the venvs',
  )
  p.add_argument('--json', metavar='FILE', help='write a JSON report')
  p.add_argument(
      '--keep',
      action='store_true',
      help='keep the throwaway checkout (path is printed)',
  )
  args = p.parse_args(argv)
  args.cache = pathlib.Path(args.cache).resolve()
  # git runs in the checkout: every path must be absolute.
  args.series = str(pathlib.Path(args.series).resolve())
  args.our_tests = str(pathlib.Path(args.our_tests).resolve())
  for opt in ('optax_src', 'sdist', 'json'):
    if getattr(args, opt):
      setattr(args, opt, str(pathlib.Path(getattr(args, opt)).resolve()))
  return args


def main(argv=None):
  args = parse_args(argv)
  args.cache.mkdir(parents=True, exist_ok=True)
  (args.cache / 'venvs').mkdir(exist_ok=True)
  work = pathlib.Path(tempfile.mkdtemp(prefix='test_head.'))
  report = {
      'started': datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%dT%H:%M:%SZ'
      ),
      'exit': 2,
  }
  try:
    code = _main(args, work, report)
  except Fatal as e:
    log(f'\ntest_head: ERROR: {e}')
    report['error'] = str(e)
    code = 2
  finally:
    if args.keep:
      log(f'(kept {work})')
    else:
      shutil.rmtree(work, ignore_errors=True)
  report['exit'] = code
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
  return code


def _main(args, work, report):
  patches = series_files(args.series)
  base = base_commit(patches)
  section('source')
  source = get_source(args, work)
  ckout, sha = checkout(source, args.ref, work)
  subject = git(ckout, 'log', '-1', '--format=%h %s (%cs)').stdout.strip()
  report.update(
      source=source.description,
      is_release=source.is_release,
      commit=sha,
      commit_subject=subject,
      series_base=base,
      patches=[p.name for p in patches],
  )
  log(f'source:      {source.description}')
  log(f'tested ref:  {args.ref} = {sha}')
  log(f'             {subject}')
  if base:
    known = git(ckout, 'cat-file', '-e', f'{base}^{{commit}}').returncode == 0
    if not known:
      log(f'series base: {base} (not in this source)')
    elif base == sha:
      log(f'series base: {base} (= tested commit)')
    else:
      if git(ckout, 'merge-base', '--is-ancestor', base, sha).returncode == 0:
        n = git(ckout, 'rev-list', '--count', f'{base}..{sha}').stdout.strip()
        rel = f'the tested commit is {n} commit(s) ahead of it'
      elif git(ckout, 'merge-base', '--is-ancestor', sha, base).returncode == 0:
        n = git(ckout, 'rev-list', '--count', f'{sha}..{base}').stdout.strip()
        rel = f'the tested commit is {n} commit(s) OLDER than it'
      else:
        rel = 'the tested commit is not on its history'
      files = sorted({f for p in patches for f in touched_files(p.read_text())})
      changed = git(
          ckout, 'diff', '--name-only', base, sha, '--', *files
      ).stdout.split()
      log(
          f'series base: {base} ({rel}; files of the series that differ: '
          f'{", ".join(changed) or "none"})'
      )
      report['files_changed_since_base'] = changed
  else:
    log('series base: unknown (no base-commit: trailer in the series)')

  section('already upstream?')
  upstream = check_upstream(ckout, patches)
  report['upstream_patches'] = upstream
  if len(upstream) == len(patches):
    log(
        f'ALREADY FIXED UPSTREAM at {sha}: every patch of the series '
        'reverse-applies; nothing to do.'
    )
    report['verdict'] = f'already fixed upstream at {sha}'
    return 0
  for name in upstream:
    log(
        f'{name}: already upstream at {sha} (reverse-applies); it will be '
        'skipped -- drop it from the series'
    )
  if not upstream:
    log('no patch of the series is in the tree')

  venv = None
  ours = our_test_paths(args.our_tests)
  if not args.no_tests:
    section('tests BEFORE (our tests on the unpatched tree)')
    opt_deps = (
        read_pyproject(ckout / 'pyproject.toml')
        .get('project', {})
        .get('dependencies', [])
    )
    venv = cached_venv(
        args.cache,
        'test',
        sorted(set(opt_deps) | set(TEST_DEPS) | set(BUILD_DEPS)),
        args.python,
    )
    report['versions_before'] = install_optax(venv, ckout)
    log(
        f'installed unpatched optax {report["versions_before"]["optax"]} '
        f'with jax {report["versions_before"]["jax"]}'
    )
    before = run_pytest(
        venv,
        'our tests on unpatched tree',
        [str(p) for p in ours],
        REPO,
        args.workers,
    )
    print_run(before)
    report['tests_before'] = dataclasses.asdict(before)
    if args.evidence:
      report['evidence_before'] = evidence(venv, work / 'ev-before.json')
    if before.ok and not upstream:
      log(
          f'ALREADY FIXED UPSTREAM at {sha}: our tests pass on the unpatched '
          'tree; the series is not needed.'
      )
      report['verdict'] = f'already fixed upstream at {sha}'
      return 0
    if before.tests and before.ok:
      log('our tests pass unpatched: the upstreamed patches fixed the bug')

  section('git am -3')
  results = apply_series(ckout, patches, set(upstream))
  report['apply'] = [dataclasses.asdict(r) for r in results]
  for r in results:
    log(f'{r.name}: {STATUS_TEXT[r.status]}')
    if r.detail and r.status == 'conflict':
      log('    ' + r.detail.replace('\n', '\n    '))
  applied_ok = all(r.status in ('clean', '3-way', 'upstream') for r in results)
  failures = [] if applied_ok else ['patch conflict']
  if not applied_ok and source.is_release:
    others = sorted(
        d.name
        for d in (REPO / 'patches').iterdir()
        if d.is_dir() and d.resolve() != pathlib.Path(args.series).resolve()
    )
    log(
        'hint: patches/main targets optax main; a release may need its own '
        'series: --series patches/<folder> (' + ', '.join(others) + ')'
    )

  files = []
  for r in results:
    if r.status in ('clean', '3-way'):
      files += [f for f in r.files if f not in files]
  if not args.no_lint and applied_ok:
    section('lint (new findings only, vs the unpatched files)')
    report['lint'] = lint(args, ckout, sha, files, work)
    if not report['lint']['ok']:
      failures.append('lint')

  if not args.no_tests and applied_ok:
    section('tests AFTER (patched tree)')
    report['versions_after'] = install_optax(venv, ckout)
    runs = []
    cwd = work / 'pytest-cwd'  # not the checkout: test the installed optax
    cwd.mkdir()
    for name, pytest_args in upstream_test_runs(ckout, files):
      runs.append(run_pytest(venv, name, pytest_args, cwd, args.workers))
    for mod in series_test_modules(ckout, results, ours):
      runs.append(
          run_pytest(
              venv, f'series test {mod}', ['--pyargs', mod], cwd, args.workers
          )
      )
    runs.append(
        run_pytest(
            venv,
            'our tests (optax_tests/) on patched tree',
            [str(p) for p in ours],
            REPO,
            args.workers,
        )
    )
    for r in runs:
      print_run(r)
    report['tests_after'] = [dataclasses.asdict(r) for r in runs]
    if not all(r.ok for r in runs):
      failures.append('tests')
    if args.evidence:
      report['evidence_after'] = evidence(venv, work / 'ev-after.json')
      report['evidence'] = compare_evidence(
          report['evidence_before'], report['evidence_after']
      )
      section('evidence (unpatched -> patched)')
      for row in report['evidence']:
        if row['error_after']:
          iterates = f"patched run failed: {row['error_after']}"
        elif row['error_before']:
          iterates = 'not compared (the unpatched run fails)'
        else:
          iterates = 'bit-identical' if row['identical'] else 'DIFFER'
        before = row['traces_before']
        if before is None and row['error_before']:
          before = 'error'
        log(
            f"{row['case']}: traces {before} -> "
            f"{row['traces_after']}; iterates {iterates}"
        )

  section('summary')
  if source.is_release:
    log('!!! TESTED A RELEASE SDIST, NOT optax HEAD !!!')
  log(f'tested commit: {sha} ({source.description})')
  for r in results:
    log(f'  {r.name}: {STATUS_TEXT[r.status]}')
  if failures:
    log(f'FAILED: {", ".join(failures)}')
    report['verdict'] = 'failed: ' + ', '.join(failures)
    return 1
  log(
      'OK: the series applies'
      + ('' if args.no_tests else ' and the tests ' 'pass')
      + ('' if args.no_lint else '; no new lint finding')
  )
  report['verdict'] = 'ok'
  return 0


if __name__ == '__main__':
  sys.exit(main())
