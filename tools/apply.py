"""Patches, checks or reverts the optax of an environment or a checkout.

The logic behind tools/apply.sh (see its --help). Picks the series of the
installed optax release from patches/targets.tsv, checks the target files
against the sha256 manifest of the pristine release, tries the whole change
on a scratch copy first, then swaps the files in with a journal, so that an
interrupted run leaves either the old or the new files once rerun. Runs are
serialized with a lock file; what was applied is recorded in a state file
next to the package (.optax-typestable.json), like patch-package does.

Exit status: 0 done (or nothing to do); 2 refused or failed, nothing
changed; --check: 0 applied, 10 not applied, 11 cannot apply, 12 not needed.

Test hooks (not for users): $OPTAX_TYPESTABLE_PATCHES replaces patches/,
$OPTAX_TYPESTABLE_CRASH_AFTER=N exits hard after N file swaps.
"""

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
STATE = '.optax-typestable.json'
LOCK = '.optax-typestable.lock'
JOURNAL_DIR = '.optax-typestable.journal'
EXIT_APPLIED, EXIT_NOT_APPLIED, EXIT_CANNOT, EXIT_NOT_NEEDED = 0, 10, 11, 12


class Refused(Exception):
  """A clear, one-line reason to change nothing."""


def log(msg):
  print(msg, flush=True)


def sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def patches_root():
  return pathlib.Path(os.environ.get('OPTAX_TYPESTABLE_PATCHES', REPO / 'patches'))


def read_targets():
  """{version: series folder} from targets.tsv."""
  targets = {}
  for line in (patches_root() / 'targets.tsv').read_text().splitlines():
    fields = line.split('\t')
    if line.strip() and not line.startswith('#') and len(fields) >= 2:
      targets[fields[0]] = fields[1]
  return targets


def series_paths(patches):
  """Every path the series names, refusing any outside the optax package."""
  paths = set()
  for p in patches:
    for line in p.read_text().splitlines():
      names = []
      if line.startswith('diff --git '):
        names = line.split()[2:4]
      elif line.startswith(('--- ', '+++ ')):
        names = [line[4:].split('\t')[0]]
      for name in names:
        if name == '/dev/null':
          continue
        rel = re.sub(r'^[ab]/', '', name)
        parts = pathlib.PurePosixPath(rel).parts
        if (
            name.startswith('/')
            or rel.startswith('/')
            or '..' in parts
            or not parts
            or parts[0] != 'optax'
        ):
          raise Refused(
              f'{p.name} writes outside the optax package ({name}): refused'
          )
        paths.add(rel)
  return sorted(paths)


def added_paths(patches):
  added = set()
  for p in patches:
    current = None
    for line in p.read_text().splitlines():
      if line.startswith('diff --git '):
        current = line.split()[3][2:]
      elif line.startswith('new file mode') and current:
        added.add(current)
  return added


def target_info(args):
  """(version, root dir holding optax/, python to run checks with)."""
  if args.target:
    root = pathlib.Path(args.target).resolve()
    init = root / 'optax' / '__init__.py'
    if not init.is_file():
      raise Refused(f'{args.target} is not an optax checkout (no optax/__init__.py)')
    m = re.search(
        r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(), re.M
    )
    if not m:
      raise Refused(f'cannot read __version__ from {init}')
    return m.group(1), root, args.verify_python or sys.executable
  code = (
      'import importlib.metadata, importlib.util, os\n'
      'spec = importlib.util.find_spec("optax")\n'
      'if spec is None or not spec.origin: raise SystemExit(3)\n'
      'print(importlib.metadata.version("optax"))\n'
      'print(os.path.dirname(os.path.dirname(spec.origin)))\n'
  )
  proc = subprocess.run(
      [args.python, '-c', code], capture_output=True, text=True, check=False
  )
  if proc.returncode != 0:
    raise Refused(
        f'no optax in the environment of {args.python} '
        f'(install it: {args.python} -m pip install optax)'
    )
  version, root = proc.stdout.split('\n')[:2]
  return version.strip(), pathlib.Path(root.strip()), args.python


def read_manifest(version):
  path = patches_root() / 'manifest' / f'{version}.sha256'
  if not path.exists():
    return None
  entries = {}
  for line in path.read_text().splitlines():
    digest, name = line.split(maxsplit=1)
    entries[name.strip()] = digest
  return entries


def modified_file(root, manifest):
  """First file whose sha256 differs from the pristine release, or None."""
  for name, digest in sorted(manifest.items()):
    path = root / name
    if not path.exists() or sha256(path) != digest:
      return name
  return None


def run_series(root, patches, paths, reverse=False):
  """The series applied (or reverted) to a scratch copy: {path: bytes|None}.

  Returns None if it does not apply cleanly.
  """
  with tempfile.TemporaryDirectory(prefix='optax-apply.') as tmp:
    scratch = pathlib.Path(tmp)
    shutil.copytree(
        root / 'optax', scratch / 'optax',
        ignore=shutil.ignore_patterns('__pycache__'),
    )
    order = list(reversed(patches)) if reverse else patches
    for p in order:
      cmd = ['patch', '-p1', '-s', '-f', '--no-backup-if-mismatch', '-d', tmp]
      cmd.append('-R' if reverse else '--forward')
      with p.open('rb') as f:
        proc = subprocess.run(cmd, stdin=f, capture_output=True, check=False)
      if proc.returncode != 0:
        return None
    result = {}
    for rel in paths:
      path = scratch / rel
      result[rel] = path.read_bytes() if path.exists() else None
    return result


def current_contents(root, paths):
  return {
      rel: (root / rel).read_bytes() if (root / rel).exists() else None
      for rel in paths
  }


def digests(contents):
  return {
      rel: (hashlib.sha256(data).hexdigest() if data is not None else None)
      for rel, data in contents.items()
  }


def swap(root, new_contents, journal_note):
  """Writes new_contents (None: delete) with a journal; see recover()."""
  journal = root / JOURNAL_DIR
  shutil.rmtree(journal, ignore_errors=True)
  (journal / 'backup').mkdir(parents=True)
  temps = {}
  # 1. New contents next to their targets (same filesystem: rename is atomic).
  for rel, data in new_contents.items():
    if data is None:
      continue
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.{target.name}.optax-typestable-new')
    tmp.write_bytes(data)
    if target.exists():
      shutil.copymode(target, tmp)
    temps[rel] = tmp
  # 2. Backups of what is there now, then the journal that makes them count.
  existed = []
  for rel in new_contents:
    if (root / rel).exists():
      dest = journal / 'backup' / rel
      dest.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(root / rel, dest)
      existed.append(rel)
  entry = {'operation': journal_note, 'paths': sorted(new_contents),
           'existed': existed}
  tmp_journal = journal / 'journal.json.tmp'
  tmp_journal.write_text(json.dumps(entry))
  os.replace(tmp_journal, journal / 'journal.json')
  # 3. The swaps.
  crash_after = int(os.environ.get('OPTAX_TYPESTABLE_CRASH_AFTER', '-1'))
  for i, rel in enumerate(sorted(new_contents)):
    if i == crash_after:
      os._exit(137)  # test hook: a crash in the middle of the swaps
    if new_contents[rel] is None:
      (root / rel).unlink(missing_ok=True)
    else:
      os.replace(temps[rel], root / rel)


def finish(root):
  shutil.rmtree(root / JOURNAL_DIR, ignore_errors=True)


def recover(root):
  """Undoes an interrupted swap: restores every file of its journal."""
  journal = root / JOURNAL_DIR
  entry_path = journal / 'journal.json'
  if not entry_path.exists():
    # Interrupted before the journal: only temporaries were written.
    for tmp in (root / 'optax').rglob('.*.optax-typestable-new'):
      tmp.unlink()
    shutil.rmtree(journal, ignore_errors=True)
    return False
  entry = json.loads(entry_path.read_text())
  for rel in entry['paths']:
    target = root / rel
    if rel in entry['existed']:
      tmp = target.with_name(f'.{target.name}.optax-typestable-restore')
      shutil.copy2(journal / 'backup' / rel, tmp)
      os.replace(tmp, target)
    else:
      target.unlink(missing_ok=True)
  for tmp in (root / 'optax').rglob('.*.optax-typestable-new'):
    tmp.unlink()
  log(f'recovered from an interrupted {entry["operation"]}: files restored '
      'to their state before it')
  shutil.rmtree(journal)
  return True


def clear_bytecode(root):
  for cache in (root / 'optax').rglob('__pycache__'):
    shutil.rmtree(cache, ignore_errors=True)


def write_state(root, record):
  tmp = root / (STATE + '.tmp')
  tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + '\n')
  os.replace(tmp, root / STATE)


def verdicts(python, root, label, is_target):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  if is_target:
    env['PYTHONPATH'] = str(root)
  proc = subprocess.run(
      [python, str(REPO / 'tools' / 'verify.py')],
      capture_output=True, text=True, env=env, check=False,
  )
  for line in proc.stdout.splitlines():
    log(f'  {label}: {line}')
  if not proc.stdout.strip():  # e.g. optax does not import with this jax
    error = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    log(f'  {label}: the checks could not run: {error}')
  return proc.returncode == 0


def writable(root, paths):
  dirs = {root} | {(root / rel).parent for rel in paths}
  for d in sorted(dirs):
    probe = d
    while not probe.exists():
      probe = probe.parent
    if not os.access(probe, os.W_OK):
      return probe
  return None


@contextlib.contextmanager
def locked(root):
  with open(root / LOCK, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def status(root, patches, paths, manifest, version):
  """(state, detail): applied / not-applied / cannot-apply."""
  state_file = root / STATE
  now = digests(current_contents(root, paths))
  if state_file.exists():
    record = json.loads(state_file.read_text())
    if record.get('version') != version:
      return 'cannot-apply', (
          f'{STATE} records optax {record.get("version")}, installed is '
          f'{version}')
    if record.get('patched') == now:
      return 'applied', 'recorded in ' + STATE
    return 'cannot-apply', (
        f'{STATE} disagrees with the files on disk (modified since applied?)')
  if manifest is not None and modified_file(root, manifest) is None:
    return 'not-applied', 'files match the released sha256'
  if run_series(root, patches, paths, reverse=True) is not None:
    return 'applied', 'series reverse-applies (no state file)'
  name = modified_file(root, manifest) if manifest else None
  return 'cannot-apply', (
      f'{name} is locally modified (sha256 differs from optax {version})'
      if name else 'files differ from the release')


def main(argv):
  parser = argparse.ArgumentParser(prog='tools/apply.sh')
  parser.add_argument('--python', help='interpreter of the environment')
  parser.add_argument('--target', help='an optax source checkout')
  parser.add_argument(
      '--verify-python', help='interpreter for the checks of a --target')
  parser.add_argument('--force', action='store_true')
  mode = parser.add_mutually_exclusive_group()
  for m in ('check', 'revert', 'dry-run', 'list'):
    mode.add_argument(f'--{m}', dest='mode', action='store_const', const=m)
  args = parser.parse_args(argv)
  args.mode = args.mode or 'apply'
  try:
    return run(args)
  except Refused as e:
    print(f'apply.sh: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('apply.sh: interrupted; rerun to recover', file=sys.stderr)
    return 130


def run(args):
  targets = read_targets()
  if args.mode == 'list':
    for version, folder in targets.items():
      n = len(list((patches_root() / folder).glob('*.patch')))
      log(f'optax {version}: patches/{folder}/ ({n} patches)')
    return 0
  if bool(args.python) == bool(args.target):
    raise Refused('give exactly one of --python and --target')
  version, root, python = target_info(args)
  where = f'{root}/optax'
  folder = targets.get(version)
  if folder is None:
    if args.mode == 'check':
      ok = verdicts(python, root, 'check', bool(args.target))
      log(f'optax {version} is not supported; '
          + ('its checks pass: not needed' if ok else 'cannot apply'))
      return EXIT_NOT_NEEDED if ok else EXIT_CANNOT
    if re.search(r'dev|\+|rc|a\d|b\d', version):
      raise Refused(
          f'optax {version} at {where} is a development build, not a release: '
          'apply patches/main with git am in a checkout instead (see '
          'CONTRIBUTING.md)')
    if not args.force:
      raise Refused(
          f'optax {version} is not supported (see tools/apply.sh --list; '
          '--force tries the newest series)')
    folder = list(targets.values())[-1]
    log(f'--force: trying patches/{folder} on unsupported optax {version}')
  patches = sorted((patches_root() / folder).glob('*.patch'))
  if not patches:
    raise Refused(f'no patches in patches/{folder}')
  paths = series_paths(patches)
  added = added_paths(patches)
  manifest = read_manifest(version)
  if manifest is None and not args.force:
    raise Refused(f'no manifest for optax {version} (tools/make_manifest.sh)')
  log(f'optax {version} at {where}, series patches/{folder} '
      f'({len(patches)} patches)')

  if args.mode in ('check', 'dry-run'):
    if (root / JOURNAL_DIR).exists():
      log('an interrupted run left a journal: the next apply or revert '
          'recovers it')
    state, detail = status(root, patches, paths, manifest, version)
    if args.mode == 'check':
      log(f'{state} ({detail})')
      return {'applied': EXIT_APPLIED, 'not-applied': EXIT_NOT_APPLIED}.get(
          state, EXIT_CANNOT)
    if state == 'applied':
      log('already applied: apply would change nothing')
    elif state == 'not-applied':
      if run_series(root, patches, paths) is None:
        raise Refused('the series does not apply to these files')
      log('apply would write: ' + ' '.join(paths))
    else:
      raise Refused(f'{detail}: apply would refuse')
    return 0

  blocker = writable(root, paths)
  if blocker is not None:
    raise Refused(f'{blocker} is not writable: nothing changed')
  with locked(root):
    recover(root)
    state, detail = status(root, patches, paths, manifest, version)
    if args.mode == 'apply':
      if state == 'applied':
        log('already applied: nothing changed')
        return 0
      if state == 'cannot-apply' and not args.force:
        raise Refused(f'{detail}: nothing changed')
      new = run_series(root, patches, paths)
      if new is None:
        raise Refused('the series does not apply to these files: nothing '
                      'changed')
      log('before:')
      verdicts(python, root, 'before', bool(args.target))
      old = current_contents(root, paths)
      swap(root, new, 'apply')
      write_state(root, {
          'version': version,
          'series': f'patches/{folder}',
          'patches': {p.name: sha256(p) for p in patches},
          'pristine': digests(old),
          'patched': digests(new),
          'added': sorted(added),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds'),
      })
      finish(root)
      clear_bytecode(root)
      log('after:')
      verdicts(python, root, 'after', bool(args.target))
      log(f'applied patches/{folder} to optax {version} '
          '(revert: tools/apply.sh --revert)')
      return 0
    # revert
    if state == 'not-applied':
      log('not applied: nothing changed')
      return 0
    if state == 'cannot-apply':
      raise Refused(f'{detail}: nothing changed')
    new = run_series(root, patches, paths, reverse=True)
    if new is None:
      raise Refused('the series does not revert cleanly: nothing changed')
    for rel in added:
      new[rel] = None
    if manifest is not None:
      differ = [n for n, d in manifest.items()
                if new.get(n) is None
                or hashlib.sha256(new[n]).hexdigest() != d]
      if differ and not args.force:
        raise Refused(f'reverting would not give the released {differ[0]}: '
                      'nothing changed')
    swap(root, new, 'revert')
    (root / STATE).unlink(missing_ok=True)
    finish(root)
    clear_bytecode(root)
    if manifest is not None and modified_file(root, manifest) is not None:
      raise Refused('reverted, but files differ from the release')
    log(f'reverted patches/{folder} from optax {version}: files match the '
        'released sha256')
    return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
