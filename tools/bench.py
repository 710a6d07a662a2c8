"""Benchmark: compilations, start-up and per-step cost of a jitted L-BFGS step.

Variants unpatched, patched and workaround (unpatched + Config.cast_back),
interleaved, each run in a fresh process (docs/benchmark.md: the design).
Exit 1 only if the patched step compiled more than once, never on timing.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

VARIANTS = ("unpatched", "patched", "workaround")
MEASURES = ("startup", "step", "scan")
STARTUP, WARM, STEADY, SCAN = 5, 3, 20, 20
ROW = "{:34s} {:10s} {:8s} {:22s} {:22s} {:22s}"  # config, variant, ...


def _worker(configs):
  """Measures each configuration (lbfgs_steps.Config fields) once, in this
  process's optax."""
  import jax  # pylint: disable=g-import-not-at-top
  import lbfgs_steps  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))  # backend start-up
  out = []
  for fields in configs:
    steps = lbfgs_steps.run(lbfgs_steps.Config(
        **fields, steps=STARTUP + WARM + STEADY))
    scan = lbfgs_steps.run(lbfgs_steps.Config(**fields, steps=SCAN, scan=True))
    out.append(dict(compiles=steps.compilations,
                    startup=sum(steps.seconds[:STARTUP]),
                    step=statistics.median(steps.seconds[STARTUP + WARM:]),
                    scan=scan.seconds[0]))
  return out


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
  if min(ratios) <= 1.0 <= max(ratios):
    return "no difference measurable"
  return (f"{statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}]")


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="CI smoke test: 1 "
                      "repeat, --sizes 1000 --only 'zoom x32,zoom x64 float32'")
  parser.add_argument("--sizes", default="10,1000,100000", help="problem sizes")
  parser.add_argument("--only", help="configurations whose name contains one "
                      "of these comma-separated strings, e.g. 'x64 float64'")
  parser.add_argument("--optax-version", default="0.2.8")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.error = lambda msg: parser.exit(2, f"bench.py: {msg}\n")
  args = parser.parse_args(argv)
  if args.worker:
    json.dump(_worker(json.load(sys.stdin)), sys.stdout)
    return 0
  import series  # pylint: disable=g-import-not-at-top
  repeats = 1 if args.quick else 5
  if args.quick:
    args.sizes, args.only = "1000", "zoom x32,zoom x64 float32"
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = series.target(args.optax_version).folder
  except (ValueError, series.SeriesError) as e:
    parser.error(str(e))
  configs = {  # name: lbfgs_steps.Config fields; zoom: lbfgs()'s own
      f"{ls} {'x64' if x64 else 'x32'} {dtype} n={n}": dict(
          linesearch="default" if ls == "zoom" else ls, x64=x64, dtype=dtype,
          objective="quadratic", size=n)
      for ls in ("zoom", "backtracking") for x64, dtype in (
          (False, "float32"), (True, "float32"), (True, "float64"))
      for n in sizes}
  configs = {name: c for name, c in configs.items() if not args.only
             or any(o in name for o in args.only.split(","))}
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
        runs = [dict(c, cast_back=v == "workaround") for c in configs.values()]
        proc = subprocess.run(
            [sys.executable, __file__, "--worker"], check=True, text=True,
            input=json.dumps(runs), capture_output=True,
            env=dict(env, PYTHONPATH=str(patched if v == "patched"
                                         else pristine)))
        samples[v].append(json.loads(proc.stdout))
  import jax  # pylint: disable=g-import-not-at-top
  print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; 1-min load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end\njax {jax.__version__}, optax "
        f"{args.optax_version} (patches/{folder}), {repeats} repeats, "
        f"interleaved{'' if repeats >= 3 else ', no ratios (fewer than 3)'}\n"
        "times in ms: min/median (spread = (max-min)/median)\n")
  print(ROW.format("config", "variant", "compiles", *MEASURES))
  for i, name in enumerate(configs):
    get = {v: {m: [run[i][m] for run in samples[v]]
               for m in ("compiles",) + MEASURES} for v in VARIANTS}
    for v in VARIANTS:
      compiles = "/".join(map(str, sorted(set(get[v]["compiles"]))))
      print(ROW.format(name, v, compiles,
                       *(_cell(get[v][m]) for m in MEASURES)))
    for other in ("unpatched", "workaround") if repeats >= 3 else ():
      print(f"{'':34s} patched/{other}: " + "; ".join(
          f"{m} {_ratio(get['patched'][m], get[other][m])}" for m in MEASURES))
  if any(c["compiles"] != 1 for run in samples["patched"] for c in run):
    print("FAIL: the patched step compiled more than once", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
