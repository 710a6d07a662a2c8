"""Benchmark: compilations, start-up and per-step cost of a jitted L-BFGS step.

Three variants measured back to back in one invocation, each in its own
process on an optax overlay (tools/overlay.sh): unpatched, patched, and
unpatched + the usual workaround (casting the new state back to the old
state's dtypes every step). Same inputs for every variant.

Per configuration (linesearch, x64, dtype, size) it measures:
  compiles   traces of a jitted step over N calls (1 = compiled once)
  startup    time of the first K steps, compilation included (new jitted
             function and optimizer per repeat, so nothing is cached)
  step       steady-state time per step (median over repeats, no compile)
  scan       time of a fresh jax.lax.scan of M steps, compile included
Claims are ratios measured in the same run: patched/unpatched and
patched/workaround.

usage: bench.py [--quick] [--repeats N] [--json FILE] [--out DIR]
                [--optax-version V] [--series DIR]
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
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ("unpatched", "patched", "workaround")


def _configs(quick):
  if quick:
    return [("zoom", x64, "float32", 1000) for x64 in (False, True)]
  out = []
  for ls in ("zoom", "backtracking"):
    for x64, dtype in ((False, "float32"), (True, "float32"), (True, "float64")):
      for size in (10, 1000, 100_000):
        out.append((ls, x64, dtype, size))
  return out


# ------------------------------------------------------------------ worker --
def _worker(variant, configs, repeats):
  """Runs in a subprocess whose PYTHONPATH selects the optax overlay."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  results = []
  for ls, x64, dtype, size in configs:
    jax.config.update("jax_enable_x64", x64)
    import optax  # pylint: disable=g-import-not-at-top

    def fn(x):  # an ill-conditioned smooth problem
      scales = jnp.logspace(0, 3, x.shape[0], dtype=x.dtype)
      return jnp.sum(scales * x**2) + jnp.sum(jnp.cos(x))

    def make_step():
      if ls == "zoom":
        opt = optax.lbfgs()
      else:
        opt = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=15))
      traces = [0]

      def step(params, state):
        traces[0] += 1
        value, grad = jax.value_and_grad(fn)(params)
        updates, new_state = opt.update(
            grad, state, params, value=value, grad=grad, value_fn=fn)
        if variant == "workaround":
          new_state = jax.tree.map(lambda x, y: x.astype(y.dtype),
                                   new_state, state)
        return optax.apply_updates(params, updates), new_state

      return opt, step, traces

    x0 = jnp.linspace(-1.0, 1.0, size, dtype=dtype)
    startup, per_step, scans, compiles = [], [], [], None
    for _ in range(repeats):
      opt, step, traces = make_step()
      jitted = jax.jit(step)
      params, state = x0, opt.init(x0)
      t0 = time.perf_counter()
      for _ in range(5):
        params, state = jitted(params, state)
      jax.block_until_ready(params)
      startup.append(time.perf_counter() - t0)
      for _ in range(3):  # warm
        params, state = jitted(params, state)
      jax.block_until_ready(params)
      times = []
      for _ in range(20):
        t0 = time.perf_counter()
        params, state = jitted(params, state)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
      per_step.append(statistics.median(times))
      compiles = traces[0]
      opt, step, _ = make_step()
      t0 = time.perf_counter()
      out, _ = jax.jit(lambda c, s=step: jax.lax.scan(
          lambda c_, _: (s(*c_), None), c, length=20))((x0, opt.init(x0)))
      jax.block_until_ready(out)
      scans.append(time.perf_counter() - t0)
    results.append(dict(
        linesearch=ls, x64=x64, dtype=dtype, size=size, variant=variant,
        compiles=compiles, startup=startup, step=per_step, scan=scans))
  return results


# ------------------------------------------------------------------ driver --
def _overlay(version, dest, series=None):
  cmd = ["bash", str(REPO / "tools" / "overlay.sh"), version, str(dest)]
  if series:
    cmd.append(str(series))
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                 env=dict(os.environ, PYTHON=sys.executable))
  return dest


def _machine():
  cpu = "unknown CPU"
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, {platform.python_version()}"


def _fmt(seconds):
  ms = seconds * 1e3
  return f"{ms:8.3f}" if ms < 10 else f"{ms:8.1f}"


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="1k problem, lbfgs() zoom, x64 off and on")
  parser.add_argument("--json", help="write every number to this file")
  parser.add_argument("--out", default=str(REPO / ".bench"),
                      help="directory for the chart (default .bench/)")
  parser.add_argument("--optax-version", default="0.2.8")
  parser.add_argument("--series", default=str(REPO / "patches" / "0.2.8"))
  parser.add_argument("--repeats", type=int,
                      help="repeats per measurement (default 3 quick, 5 full)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    variant, quick, repeats = args.worker.split(",")
    json.dump(_worker(variant, _configs(quick == "1"), int(repeats)),
              sys.stdout)
    return 0
  if not pathlib.Path(args.series).is_dir():
    parser.error(f"no such series: {args.series}")
  repeats = args.repeats or (3 if args.quick else 5)
  if repeats < 1:
    parser.error("--repeats must be at least 1")
  with tempfile.TemporaryDirectory() as tmp:
    pristine = _overlay(args.optax_version, pathlib.Path(tmp, "u"))
    patched = _overlay(args.optax_version, pathlib.Path(tmp, "p"), args.series)
    rows = []
    for variant in VARIANTS:
      overlay = patched if variant == "patched" else pristine
      out = subprocess.run(
          [sys.executable, __file__, "--worker",
           f"{variant},{int(args.quick)},{repeats}"],
          check=True, capture_output=True, text=True,
          env=dict(os.environ, PYTHONPATH=str(overlay), JAX_PLATFORMS="cpu"))
      rows += json.loads(out.stdout)
  import jax  # pylint: disable=g-import-not-at-top

  print(f"machine: {_machine()}; jax {jax.__version__}; "
        f"optax {args.optax_version}; repeats {repeats}")
  print("times in ms (min/median over repeats); ratios of medians\n")
  key = lambda r: (r["linesearch"], r["x64"], r["dtype"], r["size"])
  by = {(key(r), r["variant"]): r for r in rows}
  header = (f"{'config':32s} {'variant':10s} {'compiles':>8s} "
            f"{'startup':>17s} {'step':>17s} {'scan(20)':>17s}")
  print(header)
  ok = True
  summary = []
  for cfg in sorted({key(r) for r in rows}):
    name = f"{cfg[0]} {'x64' if cfg[1] else 'x32'} {cfg[2]} n={cfg[3]}"
    for v in VARIANTS:
      r = by[(cfg, v)]
      cells = [f"{_fmt(min(r[m]))}/{_fmt(statistics.median(r[m]))}"
               for m in ("startup", "step", "scan")]
      print(f"{name:32s} {v:10s} {r['compiles']:8d} " + " ".join(cells))
    p, u, w = (by[(cfg, v)] for v in ("patched", "unpatched", "workaround"))
    med = lambda r, m: statistics.median(r[m])
    ratios = {f"{m}_patched/{o}": med(p, m) / med(r, m)
              for m in ("startup", "step", "scan")
              for o, r in (("unpatched", u), ("workaround", w))}
    summary.append(dict(config=name, compiles={v: by[(cfg, v)]["compiles"]
                                                for v in VARIANTS}, **ratios))
    print(f"{'':32s} {'ratio':10s} patched/unpatched: startup "
          f"{ratios['startup_patched/unpatched']:.2f}, step "
          f"{ratios['step_patched/unpatched']:.2f}, scan "
          f"{ratios['scan_patched/unpatched']:.2f} | patched/workaround: "
          f"startup {ratios['startup_patched/workaround']:.2f}, step "
          f"{ratios['step_patched/workaround']:.2f}")
    ok &= p["compiles"] == 1
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(machine=_machine(), jax=jax.__version__,
                     optax=args.optax_version, rows=rows, ratios=summary),
                f, indent=1)
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("\nno matplotlib: chart skipped (pip install matplotlib)")
  else:
    cfgs = sorted({key(r) for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, len(cfgs) * 0.9), 4))
    width = 0.27
    for i, v in enumerate(VARIANTS):
      ax.bar([j + (i - 1) * width for j in range(len(cfgs))],
             [statistics.median(by[(c, v)]["startup"]) for c in cfgs],
             width, label=v)
    ax.set_xticks(range(len(cfgs)))
    ax.set_xticklabels([f"{c[0]}\n{'x64' if c[1] else 'x32'} {c[2]}\nn={c[3]}"
                        for c in cfgs], fontsize=7)
    ax.set_ylabel("first 5 steps incl. compile (s)")
    ax.set_title("L-BFGS start-up time per variant (median)")
    ax.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "startup.png")
    fig.savefig(path, dpi=120)
    print(f"\nchart: {path}")
  if not ok:
    print("FAIL: the patched step compiled more than once", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
