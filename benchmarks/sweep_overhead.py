"""Overhead of the local sweep backend against the same jobs in one plain loop.

Both sides start a fresh Python process (interpreter, imports, data loading included) and
run the same small zoo jobs with one torch thread: (a) a plain ``for`` loop over
``jacspec.zoo.run.train.run_job``; (b) ``jacspec zoo run`` with ``--workers 1 --threads 1``
(store, fork server, progress bookkeeping). Each side runs ``--repeats`` times, alternating;
the minimum wall time of each is compared. Last line: ``overhead=<t_sweep / t_loop - 1>``.

    .venv/bin/python benchmarks/sweep_overhead.py [--quick] [--jobs N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOOP = """
import json, sys, torch
torch.set_num_threads(1)
from jacspec.zoo.run.sweep import load_sweep, resolve_job
sweep = load_sweep(sys.argv[1])
job = resolve_job(sweep.job)
for cfg in sweep.configs:
    job(dict(cfg))
"""


def sweep_file(folder: Path, jobs: int, steps: int) -> Path:
    widths = list(range(16, 16 + 4 * jobs, 4))
    path = folder / "overhead.toml"
    path.write_text(
        "[fixed]\n"
        f'dataset = "digits"\nn_train = 300\nn_test = 200\nmax_steps = {steps}\n'
        'metrics = ["accuracy", "jacobian_norm", "baselines"]\n'
        f"[grid]\nwidth = {widths}\n")
    return path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 jobs, 1 repeat")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    jobs, repeats = (6, 1) if args.quick else (args.jobs, args.repeats)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    py = sys.executable
    loop_t, sweep_t = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = sweep_file(folder, jobs, args.steps)
        for r in range(repeats):
            loop_t.append(timed([py, "-c", LOOP, str(cfg)], env))
            store = folder / f"run{r}.sqlite"
            sweep_t.append(timed([py, "-m", "jacspec.cli", "zoo", "run", str(cfg), "--store",
                                  str(store), "--workers", "1", "--threads", "1",
                                  "--no-progress"], env))
            print(f"repeat {r}: loop {loop_t[-1]:.1f} s, sweep {sweep_t[-1]:.1f} s",
                  flush=True)
    result = {"jobs": jobs, "steps": args.steps, "loop_s": loop_t, "sweep_s": sweep_t,
              "loop_min_s": min(loop_t), "sweep_min_s": min(sweep_t),
              "load_average": os.getloadavg()[0]}
    print(json.dumps(result))
    print(f"overhead={min(sweep_t) / min(loop_t) - 1:.4f}")


if __name__ == "__main__":
    main()
