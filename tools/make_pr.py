#!/usr/bin/env python3
# Copyright 2026 optax-typestable contributors.
# SPDX-License-Identifier: Apache-2.0
"""Refresh patches/main from an optax branch and write patches/main/PR.md.

Front end: tools/make_pr.sh. See docs/contributing_upstream.md.

1. --from DIR --branch BR: `git format-patch --zero-commit --no-signature
   --base=<base>` of base..BR into patches/main, with stable headers: the
   Date of every patch is the fixed series date (2026-11-23T00:00:00Z, the
   author date we keep on the branch), abbreviations and diff options are
   pinned, so an unchanged branch regenerates byte-identical files. Stale
   *.patch files are removed; other files (PR.md) are left alone.
2. PR.md (unless --no-pr): from a real run of tools/test_head.py --evidence
   (or an existing JSON report of one, --report): the problem, the root cause
   per hunk, tests failing before and passing after, compile counts of a
   jitted lbfgs step, a bit-for-bit comparison of iterates, lint, links.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import email.utils
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
SERIES_DATE = '2026-11-23T00:00:00Z'
ISSUES = {
    '#1210': 'https://github.com/google-deepmind/optax/issues/1210',
    '#1207': 'https://github.com/google-deepmind/optax/issues/1207',
    '#1108': 'https://github.com/google-deepmind/optax/pull/1108',
}
# Root cause of hunks, matched by a line the hunk adds. A hunk without a note
# falls back to the comments it adds (and make_pr warns).
HUNK_NOTES = [
    (
        'num_linesearch_steps=jnp.asarray(0, dtype=int)',
        '`init` built the `info` scalars with `jnp.asarray(0)` / '
        '`jnp.asarray(jnp.inf)`, which are *weakly typed*, while `update` returns '
        'them strongly typed (`optax.tree.cast_like` uses `astype`). The state '
        'of `init` and the state of `update` therefore have different avals, so '
        'a jitted step is compiled twice and `lax.scan` / `while_loop` / `cond` '
        'reject the carry under some dtype combinations. The fix gives the same '
        'dtypes as before, explicitly, which makes them strongly typed.',
    ),
    (
        'cotangent = jnp.ones_like(new_value)',
        'With `store_grad=True`, the gradient at the new parameters was obtained '
        'by transposing the jvp of `value_fn` with the Python cotangent `1.0`, '
        'which `jax.linear_transpose` rejects unless the objective has the '
        'default float dtype (float16/bfloat16 objectives, float32 objectives '
        'under `jax_enable_x64`). The gradient could also come out wider than '
        'the one carried by the loop (float32 parameters, float64 updates), '
        'which made `jax.lax.cond` fail. The cotangent now has the dtype of the '
        'objective and the result is cast like the carried gradient.',
    ),
    (
        'def _compute_value_and_grad(p, a, kwa):',
        '`value_and_grad_from_state` puts `(value, grad)` of the state and '
        '`jax.value_and_grad(value_fn)(...)` in the two branches of '
        '`jax.lax.cond`; when `value_fn` returns another dtype than the one '
        'stored (a float64 objective of float32 parameters under x64, or a Python '
        'float), the branches disagree and `cond` raises. The computed value and '
        'gradient are now cast like the ones of the state.',
    ),
    (
        'optax.tree.cast_like(\n',
        'Values computed inside `jax.lax.cond` are cast like the ones stored in '
        'the state, so both branches have the same types.',
    ),
]


def run(cmd, cwd=None, check=True, env=None):
  full_env = dict(os.environ)
  full_env.update(env or {})
  proc = subprocess.run(
      [str(c) for c in cmd],
      cwd=cwd,
      text=True,
      capture_output=True,
      env=full_env,
      check=False,
  )
  if check and proc.returncode != 0:
    sys.exit(
        f'make_pr: command failed: {" ".join(map(str, cmd))}\n'
        f'{proc.stdout}{proc.stderr}'
    )
  return proc


def git(repo, *args, check=True):
  return run(['git', '-C', repo, *args], check=check)


# ---------------------------------------------------------------- patches


def rfc2822(iso):
  dt = datetime.datetime.strptime(iso, '%Y-%m-%dT%H:%M:%SZ').replace(
      tzinfo=datetime.timezone.utc
  )
  return email.utils.format_datetime(dt).replace('-0000', '+0000')


def series_base(series_dir):
  for p in sorted(pathlib.Path(series_dir).glob('*.patch')):
    m = re.search(r'^base-commit: ([0-9a-f]{40})$', p.read_text(), re.M)
    if m:
      return m.group(1)
  return None


def format_patches(src, branch, base, out_dir, date):
  """Writes the patches of base..branch into out_dir; returns a summary."""
  tip = git(src, 'rev-parse', '--verify', f'{branch}^{{commit}}').stdout.strip()
  if (
      git(src, 'merge-base', '--is-ancestor', base, tip, check=False).returncode
      != 0
  ):
    sys.exit(f'make_pr: base {base} is not an ancestor of {branch}')
  # Warn about author dates that are not the fixed series date.
  dates = git(src, 'log', '--format=%H %aI', f'{base}..{tip}').stdout.split(
      '\n'
  )
  want = datetime.datetime.strptime(date, '%Y-%m-%dT%H:%M:%SZ').replace(
      tzinfo=datetime.timezone.utc
  )
  for line in filter(None, dates):
    sha, adate = line.split()
    if datetime.datetime.fromisoformat(adate) != want:
      print(
          f'make_pr: note: {sha[:10]} has author date {adate}; the patch '
          f'gets the series date {date} (keep the branch at that date: '
          f"git rebase --exec 'git commit --amend --no-edit "
          f"--date={date}' {base[:10]})"
      )
  tmp = pathlib.Path(tempfile.mkdtemp(prefix='make_pr.'))
  try:
    # Pinned options: nothing of the user's git config leaks into the files.
    cmd = [
        'git',
        '-C',
        src,
        '-c',
        'core.abbrev=8',
        '-c',
        'diff.algorithm=myers',
        '-c',
        'diff.noprefix=false',
        '-c',
        'diff.mnemonicPrefix=false',
        '-c',
        'diff.renames=false',
        '-c',
        'diff.relative=false',
        '-c',
        'format.coverLetter=false',
        '-c',
        'format.numbered=auto',
        '-c',
        'format.suffix=.patch',
        '-c',
        'format.encodeEmailHeaders=true',
        'format-patch',
        '--quiet',
        '--zero-commit',
        '--no-signature',
        f'--base={base}',
        '--abbrev=8',
        '--filename-max-length=64',
        '--no-notes',
        '--no-to',
        '--no-cc',
        '--no-add-header',
        '--no-thread',
        '--binary',
        '-o',
        tmp,
        f'{base}..{tip}',
    ]
    # No global/system config: only the pinned options above apply.
    run(
        cmd,
        env={'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_SYSTEM': os.devnull},
    )
    new = sorted(tmp.glob('*.patch'))
    if not new:
      sys.exit(f'make_pr: no commit in {base}..{branch}')
    stamp = rfc2822(date)
    for p in new:
      text = p.read_text()
      text = re.sub(r'^Date: .*$', f'Date: {stamp}', text, count=1, flags=re.M)
      p.write_text(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = {p.name: p for p in out_dir.glob('*.patch')}
    summary = collections.OrderedDict()
    for p in new:
      dest = out_dir / p.name
      if dest.exists() and dest.read_bytes() == p.read_bytes():
        summary[p.name] = 'unchanged'
      else:
        summary[p.name] = 'updated' if dest.exists() else 'added'
        shutil.copyfile(p, dest)
      old.pop(p.name, None)
    for name, path in old.items():
      path.unlink()
      summary[name] = 'removed (stale)'
    return summary
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- PR.md


def parse_patch(path):
  text = path.read_text()
  head, _, rest = text.partition('\n---\n')
  m = re.search(
      r'^Subject: (?:\[PATCH[^\]]*\] )?(.*(?:\n [^\n]*)*)', head, re.M
  )
  subject = re.sub(r'\n ', ' ', m.group(1)).strip() if m else path.stem
  body = head[m.end() :].strip('\n') if m else ''
  files = re.findall(r'^diff --git a/\S+ b/(\S+)$', rest, re.M)
  hunks = []
  cur = None
  for line in rest.splitlines():
    if line.startswith('diff --git '):
      fname = line.split(' b/', 1)[1]
      cur = None
    elif line.startswith('@@ '):
      func = line.split('@@', 2)[2].strip()
      cur = {'file': fname, 'func': func, 'header': line, 'lines': []}
      hunks.append(cur)
    elif cur is not None and line[:1] in (' ', '+', '-', '\\'):
      cur['lines'].append(line)
    elif cur is not None:
      cur = None
  return {
      'name': path.name,
      'subject': subject,
      'body': body,
      'files': files,
      'hunks': hunks,
      'text': text,
  }


def hunk_note(hunk):
  added = '\n'.join(x[1:] for x in hunk['lines'] if x.startswith('+'))
  for pattern, note in HUNK_NOTES:
    if pattern.rstrip('\n') in added:
      return note, True
  comments = [
      x.strip()[1:].strip()
      for x in added.splitlines()
      if x.strip().startswith('#')
  ]
  if comments:
    return ' '.join(comments), False
  return '', False


def func_name(func):
  m = re.match(r'(?:async\s+)?(?:def|class)\s+(\w+)', func)
  return f'`{m.group(1)}`' if m else (f'`{func}`' if func else '')


def body_paragraphs(body):
  """Commit message body without trailers."""
  lines = [
      x
      for x in body.splitlines()
      if not re.match(r'^(Bug|Forwarded|Fixes|Signed-off-by): ', x)
  ]
  return '\n'.join(lines).strip()


def linkify(text):
  for ref, url in ISSUES.items():
    text = re.sub(re.escape(ref) + r'(?!\d)', f'[{ref}]({url})', text)
  return text


def is_optional(patch):
  return bool(
      re.search(
          r'optional|strict[- ]promotion',
          patch['subject'] + '\n' + patch['body'],
          re.I,
      )
  )


def summarize_failures(failures):
  """Failing test ids grouped by test method."""
  groups = collections.Counter()
  for f in failures:
    name = f.split('::')[-1]
    groups[name.split('_x')[0] if '_x' in name else name] += 1
  return groups


_DTYPES = (
    'bfloat16',
    'float16',
    'float32',
    'float64',
    'complex64',
    'complex128',
)


def failures_by_optimizer(failures):
  """{optimizer: {'x32': n, 'x64': n}} from parameterized test names."""
  table = collections.defaultdict(collections.Counter)
  for f in dict.fromkeys(failures):
    name = f.split('::')[-1]
    m = re.search(r'_(x32|x64)_(.+?)_(' + '|'.join(_DTYPES) + r')(?:_|$)', name)
    if m:
      table[m.group(2)][m.group(1)] += 1
  return table


def test_table(runs):
  rows = [
      '| run | passed | failed | errors | skipped |',
      '|---|---:|---:|---:|---:|',
  ]
  for r in runs:
    rows.append(
        f"| {r['name']} | {r['passed']} | {r['failed']} | "
        f"{r['errors']} | {r['skipped']} |"
    )
  return '\n'.join(rows)


def write_pr(report, patches, out):
  optional = [p for p in patches[1:] if is_optional(p)]
  main = [p for p in patches if p not in optional]
  first = patches[0]
  sha = report.get('commit', '?')
  lines = []
  add = lines.append
  add(f"# {first['subject'].rstrip('.')}")
  add('')
  problem = linkify(body_paragraphs(first['body']))
  if 'Fixes [#1207]' not in problem:
    add(
        f"Fixes [#1207]({ISSUES['#1207']}). Follows up on "
        f"[#1210]({ISSUES['#1210']}) and [#1108]({ISSUES['#1108']})."
    )
    add('')
  add('## Problem')
  add('')
  add(problem)
  add('')
  add('## Root cause, hunk by hunk')
  add('')
  n = 0
  seen = {}
  # The optional patches are explained as a whole in their own section.
  for p in main:
    code_hunks = [h for h in p['hunks'] if not h['file'].endswith('_test.py')]
    for h in code_hunks:
      n += 1
      note, curated = hunk_note(h)
      if not curated:
        print(
            f"make_pr: note: no curated root cause for a hunk of {p['name']}"
            f" ({h['file']} {h['header'].split('@@')[1].strip()}); using "
            'its comments'
        )
      where = func_name(h['func'])
      if note and note in seen:
        note = (
            f'Same root cause as {seen[note]}, here in {where or "this hunk"}.'
        )
      elif note:
        seen[note] = f'hunk {n}'
      add(
          f"{n}. `{h['file']}`"
          + (f', in {where}' if where else '')
          + f" ({p['name'][:4]}): {note or '(see the diff)'}"
      )
  add('')
  tests = [f for p in main for f in p['files'] if f.endswith('_test.py')]
  if tests:
    add(
        'Tests: '
        + ', '.join(f'`{t}`' for t in dict.fromkeys(tests))
        + ' (public API only, parameterized over x64, dtypes, pytree '
        'structures and linesearches).'
    )
    add('')
  add(
      'No public API change. Iterates are bit-identical to the unpatched '
      'ones (evidence below).'
  )
  add('')

  add('## Evidence')
  add('')
  src = report.get('source', '')
  add(
      f'Produced by one run of our `tools/test_head.sh --evidence` against '
      f'optax '
      f"`{sha}` ({report.get('commit_subject', '')}), "
      f"jax {report.get('versions_after', {}).get('jax', '?')}, CPU."
  )
  if report.get('is_release'):
    add('')
    add(f'> **Warning:** tested on a release sdist ({src}), NOT on HEAD.')
  add('')
  add('Patches applied with `git am -3`:')
  add('')
  status_text = {
      'clean': 'applies cleanly',
      '3-way': 'applies with 3-way merge',
      'conflict': 'CONFLICTS',
      'upstream': 'already upstream',
      'not attempted': 'not attempted',
  }
  for a in report.get('apply', []):
    add(f"- `{a['name']}`: {status_text.get(a['status'], a['status'])}")
  add('')
  before = report.get('tests_before')
  after = report.get('tests_after', [])
  if before:
    add('### Before (unpatched HEAD)')
    add('')
    add(
        f'The new type-stability tests, run on unpatched optax: '
        f"**{before['failed'] + before['errors']} of {before['tests']} "
        f"fail**, {before['passed']} pass."
    )
    groups = summarize_failures(before['failures'])
    if groups:
      add('')
      add('| test | failing cases |')
      add('|---|---:|')
      for name, count in sorted(groups.items()):
        add(f'| `{name}` | {count} |')
    by_opt = failures_by_optimizer(before['failures'])
    if by_opt:
      add('')
      add('| optimizer | failing, x64 off | failing, x64 on |')
      add('|---|---:|---:|')
      for opt_name, c in sorted(by_opt.items()):
        add(f"| `{opt_name}` | {c['x32']} | {c['x64']} |")
    add('')
  if after:
    add('### After (patched)')
    add('')
    add(test_table(after))
    add('')
  ev = report.get('evidence')
  if ev:
    add('### Compile count of a jitted `lbfgs` step')
    add('')
    add(
        'Jitted step `value_and_grad_from_state` + `lbfgs().update`, called '
        f"{ev[0]['steps']} times on the Rosenbrock function; number of "
        'traces (1 = compiled once):'
    )
    add('')
    add('| case | before | after |')
    add('|---|---:|---:|')
    for row in ev:
      b = (
          row['traces_before']
          if row['error_before'] is None
          else ('error: ' + row['error_before'].split(':')[0])
      )
      a = (
          row['traces_after']
          if row['error_after'] is None
          else ('error: ' + row['error_after'].split(':')[0])
      )
      add(f"| `{row['case']}` | {b} | {a} |")
    errs = {row['error_before'] for row in ev if row['error_before']}
    for e in sorted(errs):
      add('')
      add(f'Before, `{e}`')
    add('')
    add('### Numerics')
    add('')
    same = [r for r in ev if r['identical']]
    comparable = [
        r for r in ev if r['error_before'] is None and r['error_after'] is None
    ]
    add(
        f'In the same runs, the sha256 of the raw bytes of all iterates and '
        f'values is **identical before and after in {len(same)} of '
        f'{len(comparable)} cases** that run unpatched '
        '(the others fail unpatched):'
    )
    add('')
    add('| case | iterates sha256 (first 16) | bit-identical |')
    add('|---|---|---|')
    for r in ev:
      ident = (
          'yes'
          if r['identical']
          else 'n/a (fails unpatched)'
          if r['error_before']
          else '**NO**'
      )
      add(f"| `{r['case']}` | `{r['sha256']}` | {ident} |")
    add('')
  lint = report.get('lint')
  if lint:
    tools = ', '.join(f'{k} {v}' for k, v in lint.get('tools', {}).items())
    add('### Lint')
    add('')
    add(
        f"`ruff check` with optax's `pyproject.toml`, "
        f"`.github/check_license_headers.py` and `pyink` with optax's "
        f'`[tool.pyink]` ({tools}) on the touched files: '
        + (
            'no new finding.'
            if lint['ok']
            else f"**{len(lint['new'])} new finding(s)**."
        )
    )
    add('')
  if optional:
    add('## Optional patch')
    add('')
    for p in optional:
      add(
          f"`{p['name']}` ({p['subject']}) is independent of "
          + ', '.join(f"`{q['name'][:4]}`" for q in main)
          + ': it is last in the series, nothing before it depends on it, '
          'and the fix above is complete without it. Maintainers may take it '
          'or leave it; dropping it only drops that change and its test.'
      )
      add('')
      add(linkify(body_paragraphs(p['body'])))
      add('')
  add('## Links')
  add('')
  add(
      f"- [#1210]({ISSUES['#1210']}) \"64 bit precision breaks LBFGS with "
      'scan": the L-BFGS state changes dtype in `lax.scan` under x64.'
  )
  add(f"- [#1207]({ISSUES['#1207']}): fixed by this pull request.")
  add(
      f"- [#1108]({ISSUES['#1108']}) \"Avoid re-compilation and allow "
      'non-float32 dtypes in the zoom_linesearch": an earlier, closed pull '
      'request on the same recompilation.'
  )
  text = '\n'.join(lines).rstrip('\n') + '\n'
  out.write_text(text)


def run_test_head(optax_src, ref, json_path, extra):
  cmd = [
      sys.executable,
      REPO / 'tools' / 'test_head.py',
      '--optax-src',
      optax_src,
      '--ref',
      ref,
      '--evidence',
      '--json',
      json_path,
      *extra,
  ]
  print('make_pr: running ' + ' '.join(map(str, cmd)), flush=True)
  proc = subprocess.run([str(c) for c in cmd], check=False)
  return proc.returncode


def main(argv=None):
  p = argparse.ArgumentParser(
      prog='tools/make_pr.sh',
      description=__doc__,
      formatter_class=argparse.RawTextHelpFormatter,
  )
  p.add_argument(
      '--from',
      dest='src',
      metavar='DIR',
      help='optax checkout holding the working branch',
  )
  p.add_argument('--branch', help='working branch (commits on top of base)')
  p.add_argument(
      '--base',
      help='base commit (default: base-commit of the '
      'current series, else merge-base with main)',
  )
  p.add_argument('--series', default=str(REPO / 'patches' / 'main'))
  p.add_argument(
      '--date',
      default=SERIES_DATE,
      help=f'Date of every patch (default {SERIES_DATE})',
  )
  p.add_argument('--no-pr', action='store_true', help='patches only')
  p.add_argument(
      '--report',
      help='use this test_head JSON report instead of '
      'running tools/test_head.py',
  )
  p.add_argument('--optax-src', help='repo for the test run (default --from)')
  p.add_argument('--ref', help='ref to test (default: the series base)')
  p.add_argument('--save-report', help='also keep the JSON report here')
  args = p.parse_args(argv)
  series = pathlib.Path(args.series).resolve()

  if args.src:
    if not args.branch:
      p.error('--from needs --branch')
    src = pathlib.Path(args.src).resolve()
    base = args.base or series_base(series)
    if not base:
      base = git(src, 'merge-base', args.branch, 'main').stdout.strip()
    base = git(
        src, 'rev-parse', '--verify', f'{base}^{{commit}}'
    ).stdout.strip()
    summary = format_patches(src, args.branch, base, series, args.date)
    for name, what in summary.items():
      print(f'make_pr: {what}: {series.name}/{name}')
  elif args.branch:
    p.error('--branch needs --from')
  if args.no_pr:
    return 0

  patches = [parse_patch(x) for x in sorted(series.glob('*.patch'))]
  if not patches:
    sys.exit(f'make_pr: no patch in {series}')
  rc = 0
  if args.report:
    report = json.loads(pathlib.Path(args.report).read_text())
  else:
    optax_src = args.optax_src or args.src
    if not optax_src:
      p.error('give --from, --optax-src or --report')
    ref = args.ref or series_base(series) or 'HEAD'
    with tempfile.TemporaryDirectory() as tmp:
      json_path = pathlib.Path(tmp) / 'report.json'
      extra = ['--series', str(series)]
      rc = run_test_head(optax_src, ref, json_path, extra)
      if not json_path.exists():
        sys.exit('make_pr: tools/test_head.py wrote no report')
      report = json.loads(json_path.read_text())
      if args.save_report:
        shutil.copyfile(json_path, args.save_report)
  if report.get('verdict', '').startswith('already fixed upstream'):
    sys.exit(f"make_pr: {report['verdict']}: no PR to write")
  if rc != 0 or report.get('exit') != 0:
    print(
        f"make_pr: WARNING: the test run failed ({report.get('verdict')}); "
        'PR.md shows it',
        file=sys.stderr,
    )
  out = series / 'PR.md'
  write_pr(report, patches, out)
  print(f'make_pr: wrote {out}')
  return 1 if report.get('exit') != 0 else 0


if __name__ == '__main__':
  sys.exit(main())
