"""Benchmark: compilations, start-up and per-step cost of a jitted L-BFGS step.

Variants, on overlays of one optax release built by tools/series.py:
  unpatched    the release as published
  patched      with its series applied
  workaround   unpatched, the new state cast back to the old state's dtypes
               after every update (lbfgs_steps.Config.cast_back)
Per configuration (linesearch, x64, dtype, size; problem: the
ill-conditioned "quadratic" of tools/lbfgs_steps.py) it measures:
  compiles     traces of the jitted step over its calls (1 = compiled once)
  startup      the first 5 calls of a new jitted step, compilation included
  step         steady state: median of 20 calls after 3 more warm-up calls
  scan         a new jitted lax.scan of 20 steps, compilation included

Interleaved: repeat r runs the variants in the order unpatched, patched,
workaround (ABCABC...), each in a fresh process that measures every
configuration once. A fresh process rather than a fresh jitted function in
one process, because the variants are different optax packages, which
cannot share a process, and because then every run of every variant starts
from the same cold in-memory caches of jax (traced jnp helpers, compiled
executables), so start-up pays the same one-time costs everywhere. Process
start and the import of jax are not timed; a warm-up compilation in each
process keeps backend initialization out of the first configuration.
JAX_COMPILATION_CACHE_DIR is unset: compilations are never read from disk.

Ratios are paired: patched/other of repeat r compares two runs adjacent in
time, so the slow drifts of a shared machine cancel. Each is shown as the
median [min-max] over the repeats and only when the whole range lies on one
side of 1.0 (all repeats agree; with 5 repeats a sign test gives p = 1/16),
else as "no difference measurable". With many ratios a few pass by chance
(1 in 16 each): a finding is what holds across configurations and runs.
Timing never fails the run; the exit status is 1 only when the patched
step compiled more than once.

usage: bench.py [--quick] [--repeats N] [--sizes N,N...] [--only S,S...]
                [--json FILE] [--optax-version V]
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

TOOLS = pathlib.Path(__file__).resolve().parent
VARIANTS = ("unpatched", "patched", "workaround")
MEASURES = ("startup", "step", "scan")
STARTUP, WARM, STEADY, SCAN = 5, 3, 20, 20


def _configs(quick, sizes):
  """[(linesearch, x64, dtype, size)]: lbfgs() (zoom) and backtracking."""
  if quick:
    return [("zoom", x64, "float32", 1000) for x64 in (False, True)]
  return [(ls, x64, dtype, size) for ls in ("zoom", "backtracking")
          for x64, dtype in ((False, "float32"), (True, "float32"),
                             (True, "float64")) for size in sizes]


def _worker(cast_back, configs):
  """One run of every configuration, in this process's optax."""
  import jax  # pylint: disable=g-import-not-at-top
  import lbfgs_steps  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))  # backend start-up
  out = []
  for ls, x64, dtype, size in configs:
    cfg = lbfgs_steps.Config(
        linesearch="default" if ls == "zoom" else "backtracking", x64=x64,
        dtype=dtype, objective="quadratic", size=size, cast_back=cast_back,
        steps=STARTUP + WARM + STEADY)
    steps = lbfgs_steps.run(cfg)
    scan = lbfgs_steps.run(dataclasses.replace(cfg, scan=True, steps=SCAN))
    out.append(dict(compiles=steps.compilations,
                    startup=sum(steps.seconds[:STARTUP]),
                    step=statistics.median(steps.seconds[STARTUP + WARM:]),
                    scan=scan.seconds[0]))
  return out


def _name(cfg):
  return f"{cfg[0]} {'x64' if cfg[1] else 'x32'} {cfg[2]} n={cfg[3]}"


def _machine():
  cpu = "unknown CPU"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f
                  if l.startswith("model name")), cpu)
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _ms(seconds):
  ms = seconds * 1e3
  return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _cell(samples):
  """min/median (spread: (max-min)/median), in ms."""
  med = statistics.median(samples)
  spread = (max(samples) - min(samples)) / med
  return f"{_ms(min(samples))}/{_ms(med)} ({spread:.0%})"


def _ratio(ours, theirs):
  """Paired ratios over the repeats, as a claim or as no claim."""
  ratios = [a / b for a, b in zip(ours, theirs)]
  low, high = min(ratios), max(ratios)
  if len(ratios) < 3:
    return None, "not compared (fewer than 3 repeats)"
  if low <= 1.0 <= high:
    return None, "no difference measurable"
  return statistics.median(ratios), (
      f"{statistics.median(ratios):.2f} [{low:.2f}-{high:.2f}]")


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="CI smoke test: lbfgs(), n=1000, x64 off and on")
  parser.add_argument("--repeats", type=int,
                      help="runs of each variant (default 1 quick, 5 full)")
  parser.add_argument("--sizes", default="10,1000,100000",
                      help="problem sizes of the full run")
  parser.add_argument("--only", help="configurations whose name contains one "
                      "of these comma-separated strings, e.g. 'x64 float64'")
  parser.add_argument("--json", help="write every sample to this file")
  parser.add_argument("--optax-version", default="0.2.8")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    json.dump(_worker(args.worker == "workaround", json.load(sys.stdin)),
              sys.stdout)
    return 0
  sys.path.insert(0, str(TOOLS))
  import series  # pylint: disable=g-import-not-at-top
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = series.target(args.optax_version).folder
  except (ValueError, series.SeriesError) as e:
    parser.error(str(e))
  repeats = args.repeats or (1 if args.quick else 5)
  if repeats < 1:
    parser.error("--repeats must be at least 1")
  configs = [c for c in _configs(args.quick, sizes) if not args.only or any(
      o in _name(c) for o in args.only.split(","))]
  if not configs:
    parser.error(f"no configuration matches --only {args.only}")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compilations are measured
  samples = {v: [] for v in VARIANTS}  # variant -> [per repeat: [per config]]
  load = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as tmp:
    pristine = series.overlay(args.optax_version, pathlib.Path(tmp, "u"))
    patched = series.overlay(args.optax_version, pathlib.Path(tmp, "p"), folder)
    for r in range(repeats):
      for v in VARIANTS:
        print(f"repeat {r + 1}/{repeats}: {v}", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", v], check=True, text=True,
            input=json.dumps(configs), capture_output=True,
            env=dict(env, PYTHONPATH=str(patched if v == "patched"
                                         else pristine)))
        samples[v].append(json.loads(proc.stdout))
  import jax  # pylint: disable=g-import-not-at-top

  print(f"machine: {_machine()}; 1-min load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end\njax {jax.__version__}, optax "
        f"{args.optax_version} (patches/{folder}), {repeats} repeats, "
        "interleaved\ntimes in ms: min/median (spread = (max-min)/median)\n")
  print(f"{'config':34s} {'variant':10s} {'compiles':8s} "
        + " ".join(f"{m:22s}" for m in MEASURES))
  ok, report = True, []
  for i, cfg in enumerate(configs):
    name = _name(cfg)
    get = {v: {m: [run[i][m] for run in samples[v]]
               for m in ("compiles",) + MEASURES} for v in VARIANTS}
    for v in VARIANTS:
      compiles = sorted(set(get[v]["compiles"]))
      print(f"{name:34s} {v:10s} {'/'.join(map(str, compiles)):8s} "
            + " ".join(f"{_cell(get[v][m]):22s}" for m in MEASURES))
    ok &= max(get["patched"]["compiles"]) == 1
    row = dict(config=name, samples=get)
    for other in ("unpatched", "workaround"):
      claims = {m: _ratio(get["patched"][m], get[other][m]) for m in MEASURES}
      row[f"patched/{other}"] = {m: c[0] for m, c in claims.items()}
      print(f"{'':34s} patched/{other}: "
            + "; ".join(f"{m} {c[1]}" for m, c in claims.items()))
    report.append(row)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(dict(machine=_machine(), jax=jax.__version__,
                     optax=args.optax_version, repeats=repeats,
                     configs=report), f, indent=1)
  if not ok:
    print("FAIL: the patched step compiled more than once", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
