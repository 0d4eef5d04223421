"""Study A of the mnist study: networks trained on true vs random labels (seed 000's claim).

Three MLPs (ReLU 256x1, 512x2, 128x4) and a small CNN (one ReLU conv block of 32 3x3
channels, 2x2 max-pooling, a linear read-out; the networks run in this order), 5 seeds
each, trained with Adam (lr 1e-3, batch 64) to 100% train accuracy on the true labels and on
uniformly random labels of the same 4,000 mnist5k digits: 40 networks, run as a zoo store
(``mnist_study_a.sqlite``: resumable, re-scorable) with every zoo metric (the Jacobian-ESD
metrics on 200 train and 200 test points from float64 Jacobians, WeightWatcher's columns, the
Jacobian norm, transitions, margins, weight norms). The section reports, for every metric,
the AUC at telling the two groups apart, ``P(metric_random > metric_true)`` over all pairs of
networks (pooled over the architectures, and within each), with a 95% bootstrap interval
(each group resampled), and the train-point ESDs of each architecture side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from mnist_study_common import (
    SMOKE_TRAIN,
    TRAIN,
    WITHDRAWN,
    auc,
    auc_interval,
    ci,
    fmt,
    rank_cell,
    rank_ranges,
)

STORE = "mnist_study_a.sqlite"
FIGURES = "mnist_study"
ARCHS = {
    "mlp 256x1": {"model": "mlp", "width": 256, "depth": 1},
    "mlp 512x2": {"model": "mlp", "width": 512, "depth": 2},
    "mlp 128x4": {"model": "mlp", "width": 128, "depth": 4},
    "cnn 32": {"model": "cnn", "width": 32, "depth": 1},
}
SEEDS = (0, 1, 2, 3, 4)
#: Columns that describe training or use the test labels: not metrics of the network.
NOT_METRICS = ("gap", "loss_gap", "train_accuracy", "test_accuracy", "train_loss",
               "test_loss", "epochs", "steps", "train_seconds", "converged", "full_batch",
               "duration", "attempts", "num_params", "train_margin_p10",
               "train_margin_median", "inverse_margin")


def configs(*, smoke: bool = False) -> list[dict[str, Any]]:
    """The 40 networks: architecture x labels x seed (Adam 1e-3, batch 64)."""
    base = {**TRAIN, **(SMOKE_TRAIN if smoke else {}), "optimizer": "adam", "lr": 1e-3,
            "batch_size": 64, "activation": "relu", "init_scale": 1.0, "augment": False}
    archs = dict(list(ARCHS.items())[:: 3 if smoke else 1])  # smoke: mlp 256x1 and the cnn
    if smoke:
        archs = {k: {**v, "width": 8} for k, v in archs.items()}
    seeds = SEEDS[:2] if smoke else SEEDS
    return [{**base, **arch, "random_labels": rl, "seed": s}
            for arch in archs.values() for rl in (False, True) for s in seeds]


def arch_name(row: Any) -> str:
    return f"{row['model']} " + (f"{int(row['width'])}x{int(row['depth'])}" if
                                 row["model"] == "mlp" else
                                 "-".join(str(int(row["width"]) * 2 ** i)
                                          for i in range(int(row["depth"]))))


def metric_names(runs: Any) -> list[str]:
    """Numeric columns that are metrics of a trained network (not settings or outcomes)."""
    from jacspec.zoo.run.train import DEFAULTS

    skip = set(NOT_METRICS) | set(DEFAULTS) | set(WITHDRAWN) | {
        "config_hash", "status", "error", "started", "finished", "host"}
    cols = []
    for c in runs.columns:
        if c in skip or c.startswith("jac_") and c.endswith("_num_evals"):
            continue
        v = runs[c]
        if v.dtype.kind in "fi" and np.isfinite(v.to_numpy(float)).any():
            cols.append(c)
    return cols


def auc_table(runs: Any, *, reps: int = 1000) -> Any:
    """One row per metric: pooled AUC ``P(random > true)`` with its interval, and the AUC
    within each architecture."""
    import pandas as pd

    runs = runs.assign(arch=[arch_name(r) for _, r in runs.iterrows()])
    rand = runs["random_labels"].astype(bool).to_numpy()
    rows = []
    for m in metric_names(runs):
        v = runs[m].to_numpy(float)
        a = auc(v[rand], v[~rand])
        lo, hi = auc_interval(v[rand], v[~rand], reps=reps)
        row = {"metric": m, "auc": a, "lo": lo, "hi": hi,
               "separation": abs(a - 0.5) * 2 if math.isfinite(a) else math.nan}
        for arch, sub in runs.groupby("arch", sort=False):
            sv, sr = sub[m].to_numpy(float), sub["random_labels"].astype(bool).to_numpy()
            row[arch] = auc(sv[sr], sv[~sr])
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def esd_figures(store: Path, runs: Any, folder: Path) -> list[Path]:
    """Per architecture, seed 0's train-point ESDs (true vs random labels) on one log-log plot
    with their power-law fits; one PNG per architecture."""
    from jacspec.heavytail.powerlaw import fit_powerlaw
    from jacspec.report.esd_plots import plot_esd_pair
    from jacspec.zoo.run.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    runs = runs.assign(arch=[arch_name(r) for _, r in runs.iterrows()])
    first = int(runs["seed"].min())
    with Store(store, readonly=True) as db:
        for arch, sub in runs[runs["seed"] == first].groupby("arch", sort=False):
            pair = {bool(r["random_labels"]): r for _, r in sub.iterrows()}
            if set(pair) != {False, True}:
                continue
            eigs, fits = [], []
            path = folder / f"study_a_esd_{arch.replace(' ', '_')}.png"
            try:  # the arrays sit beside the store (not committed): a fresh clone keeps the
                arrays = [db.array(pair[rl]["config_hash"], "esd_train")  # committed figure
                          for rl in (False, True)]
            except OSError:
                continue
            for raw in arrays:
                ev = np.asarray(raw, float)
                ev = ev[ev > 0]
                eigs.append(ev)
                try:
                    fits.append(fit_powerlaw(ev))
                except (ValueError, RuntimeError):
                    fits.append(None)
            fig = plot_esd_pair(eigs[0], eigs[1], fits=(fits[0], fits[1]),
                                title=f"{arch}: Jacobian ESD on 200 train digits (seed {first})")
            fig.savefig(path, dpi=100, bbox_inches="tight")
            paths.append(path)
    return paths


def section(out: Path, *, reps: int = 1000, with_aucs: bool = True) -> list[str]:
    """Study A's part of the report (pending while its store is missing); ``with_aucs``:
    with the ranked AUC table (the headline reports the AUCs with their ties instead)."""
    from jacspec.zoo.run.store import Store

    store = out / STORE
    lines = ["## A. True vs random labels", ""]
    if not store.exists():
        return [*lines, "**Pending**: run `experiments/mnist_study.py study-a`.", ""]
    with Store(store, readonly=True) as db:
        counts = db.counts()
        runs = db.runs(status="done")
    if len(runs) < 4:
        return [*lines, f"**In progress**: {counts['done']} of {counts['total']} networks.", ""]
    conv = runs["converged"].astype(bool)
    lines += [
        f"{counts['done']} of {counts['total']} networks finished ({int(conv.sum())} reached "
        "100% train accuracy; the others are excluded below). Architectures: "
        + ", ".join(ARCHS) + "; seeds " + ", ".join(map(str, SEEDS)) + "; Adam (lr 1e-3, "
        "batch 64), true labels and uniformly random labels of the same 4,000 digits.", ""]
    bad = runs[~conv]
    if len(bad):
        lines += ["Excluded: " + ", ".join(
            f"{arch_name(r)}/{'random' if r['random_labels'] else 'true'}/seed {r['seed']} "
            f"(train acc {r['train_accuracy']:.4f})" for _, r in bad.iterrows()) + ".", ""]
    runs = runs[conv]
    rand = runs["random_labels"].astype(bool)
    if rand.sum() < 2 or (~rand).sum() < 2:
        return [*lines, "AUCs: pending (fewer than 2 converged networks in a group).", ""]
    means = runs.assign(arch=[arch_name(r) for _, r in runs.iterrows()]).groupby(
        ["arch", "random_labels"], sort=False)[["test_accuracy", "epochs"]].mean()
    lines += ["| architecture | labels | test accuracy | epochs to 100% |", "|---|---|---:|---:|"]
    lines += [f"| {a} | {'random' if rl else 'true'} | {fmt(r['test_accuracy'])} | "
              f"{r['epochs']:.0f} |" for (a, rl), r in means.iterrows()]
    if not with_aucs:
        return [*lines, "", "The AUCs of every metric are in the section *True vs random "
                "labels: AUC only* above.", "", *_figures(out)]
    table = auc_table(runs, reps=reps)
    ranks = rank_ranges([(m, r["auc"] - 0.5, r["lo"] - 0.5, r["hi"] - 0.5)
                         for m, r in table.iterrows()])
    table = table.sort_values("separation", ascending=False)
    archs = [c for c in table.columns if c not in ("auc", "lo", "hi", "separation")]
    lines += [
        "", f"AUC = P(metric of a random-label network > metric of a true-label network) over "
        f"all pairs of the {len(runs)} converged networks (0.5: no separation, 0 or 1: every "
        f"pair told apart), with a 95% bootstrap interval ({reps} resamples, each group "
        "resampled). Rank: the places by |AUC - 0.5| that the intervals allow (a metric is "
        "placed below another only when its interval lies wholly below; metrics whose "
        "intervals overlap have overlapping ranges and are not ranked against each other). "
        "The last columns are the AUC within each architecture (5 vs 5 networks).",
        "", "| metric | rank | AUC | 95% CI | " + " | ".join(archs) + " |",
        "|---|---:|---:|---|" + "---:|" * len(archs)]
    for m, r in table.iterrows():
        lines.append(f"| `{m}` | {rank_cell(*ranks.get(m, (0, 0)))} | {fmt(r['auc'])} | "
                     f"{ci(r['lo'], r['hi'])} | " + " | ".join(fmt(r[a], 2) for a in archs) + " |")
    return [*lines, "", *_figures(out)]


def _figures(out: Path) -> list[str]:
    figs = sorted((out / FIGURES).glob("study_a_esd_*.png"))
    if not figs:
        return []
    return ["Train-point Jacobian ESDs, true (blue) vs random (orange) labels, first seed, "
            "with power-law fits:", "", *[f"![{p.stem}]({FIGURES}/{p.name})" for p in figs],
            ""]


def summary(out: Path, *, reps: int = 1000) -> dict[str, Any]:
    """Numbers the verdict quotes: the best-separating metric of each kind."""
    from jacspec.zoo.run.store import Store

    store = out / STORE
    if not store.exists():
        return {}
    with Store(store, readonly=True) as db:
        runs = db.runs(status="done")
    runs = runs[runs["converged"].astype(bool)]
    rand = runs["random_labels"].astype(bool)
    if rand.sum() < 2 or (~rand).sum() < 2:
        return {}
    return {"table": auc_table(runs, reps=reps), "n": len(runs)}
