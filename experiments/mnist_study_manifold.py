"""Study D of the mnist study: sensitivity on and off the data manifold (Novak et al.'s first
result; seeds 002/004).

Three ReLU MLPs 512x2 (seeds 0-2) trained with Adam (lr 1e-3, batch 64) to 100% train
accuracy on the 4,000 mnist5k digits. Along closed trajectories, finely sampled (512 points,
32 code samples per segment): ellipses through three training digits of one class, through
three digits of different classes, random ellipses at the data's scale, and horizontal
translations of a test digit (8 of each per network), the Jacobian norm ``||J(z(t))||_F`` of
the softmax and the density of linear-region transitions (activation-code changes per unit
length). Per trajectory: the median norm over the norm at the anchors (> 1: the norm dips at
the training points) and the transition density within 1/24 of an anchor over the density
elsewhere (< 1: fewer transitions at the training points). Results per network in
``mnist_study/study_d/seed<k>.json`` (a finished network is skipped on a rerun).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from mnist_study_common import SMOKE_TRAIN, TRAIN, fmt

FOLDER = "mnist_study/study_d"
FIGURES = "mnist_study"
SEEDS = (0, 1, 2)
KINDS = ("same_class", "different_class", "random", "translation")
WINDOW = 1 / 24


def config(seed: int, *, smoke: bool = False) -> dict[str, Any]:
    return {**TRAIN, **(SMOKE_TRAIN if smoke else {}), "model": "mlp",
            "width": 16 if smoke else 512, "depth": 2, "activation": "relu",
            "init_scale": 1.0, "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
            "augment": False, "random_labels": False, "seed": seed}


def anchor_density_ratio(prof: Any) -> float:
    """Transition density within ``WINDOW`` of an anchor (circular distance in t) over the
    density on the rest of the trajectory (NaN without anchors or transitions)."""
    if not prof.anchors:
        return float("nan")
    t = np.asarray(prof.t, float)
    dist = np.min([np.abs((t - a + 0.5) % 1.0 - 0.5) for a in prof.anchors], axis=0)
    near = dist < WINDOW
    length = np.asarray(prof.segment_length, float)
    trans = np.asarray(prof.transitions, float)
    if length[near].sum() == 0 or length[~near].sum() == 0 or trans[~near].sum() == 0:
        return float("nan")
    return float((trans[near].sum() / length[near].sum())
                 / (trans[~near].sum() / length[~near].sum()))


def profiles_of(model: Any, train: Any, test: Any, *, count: int, num_points: int,
                refine: int) -> list[Any]:
    from jacspec.sensitivity.trajectories import (
        different_class_ellipse,
        random_ellipse,
        same_class_ellipse,
        trajectory_profile,
        translation_trajectory,
    )

    out = []
    build = {"same_class": same_class_ellipse, "different_class": different_class_ellipse,
             "random": random_ellipse}
    for kind in KINDS[:3]:
        for s in range(count):
            out.append(trajectory_profile(model, build[kind](train, seed=s),
                                          num_points=num_points, refine=refine))
    rng = np.random.default_rng(0)
    for _ in range(count):
        i = int(rng.integers(len(test)))
        out.append(trajectory_profile(model, translation_trajectory(test.x[i]),
                                      num_points=num_points, refine=refine))
    return out


def run_one(seed: int, folder: Path, figdir: Path, *, smoke: bool = False,
            log: Any = None) -> dict[str, Any]:
    """Train one network and measure its trajectories (skipped when already done)."""
    import torch

    from jacspec.report.sensitivity_plots import plot_mean_profiles
    from jacspec.zoo.run.train import fit, load_data, make_model, resolve_config

    path = folder / f"seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    cfg = resolve_config(config(seed, smoke=smoke))
    train, test = load_data(cfg)
    model = make_model(cfg, train)
    res = fit(model, train, cfg)
    model.eval()
    count, num_points, refine = (2, 64, 4) if smoke else (8, 512, 32)
    with torch.no_grad():
        profs = profiles_of(model, train, test, count=count, num_points=num_points,
                            refine=refine)
    rows = [{**p.summary(), "anchor_density_ratio": anchor_density_ratio(p)} for p in profs]
    mean = {}
    for kind in KINDS:
        group = [p for p in profs if p.kind == kind]
        mean[kind] = {"t": group[0].t.tolist(),
                      "log_norm": np.mean([np.log(p.jacobian_norm) for p in group],
                                          axis=0).tolist(),
                      "density": np.mean([p.transition_density for p in group],
                                         axis=0).tolist(),
                      "anchors": list(group[0].anchors)}
    fig = plot_mean_profiles(profs, title=f"mnist5k, MLP 512x2 (seed {seed}), 100% train "
                             "accuracy: averaged over trajectories of each kind")
    figdir.mkdir(parents=True, exist_ok=True)
    fig.savefig(figdir / f"study_d_profiles_seed{seed}.png", dpi=100)
    record = {"seed": seed, "train_accuracy": res.train_accuracy, "epochs": res.epochs,
              "converged": res.reached in ("accuracy", "loss"), "rows": rows, "mean": mean,
              "seconds": time.perf_counter() - t0}
    path.write_text(json.dumps(record, allow_nan=True) + "\n")
    if log is not None:
        print(f"study-d: seed {seed} done, {record['seconds']:.0f} s", file=log, flush=True)
    return record


def run(out: Path, *, smoke: bool = False, log: Any = None) -> list[dict[str, Any]]:
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return [run_one(s, folder, out / FIGURES, smoke=smoke, log=log)
            for s in (SEEDS[:1] if smoke else SEEDS)]


def _dip_text(ell: Any) -> str:
    """Which ellipses through training digits show the dip (median / anchor > 1)."""
    names = {"same_class": "same-class", "different_class": "different-class"}
    yes = [k for k in ell.index if ell.loc[k, "dip"] > 1]
    if len(yes) == len(ell):
        return "the norm dips at the training points on both kinds of ellipse"
    if not yes:
        return "the norm does not dip at the training points on either kind of ellipse"
    no = [k for k in ell.index if k not in yes]
    return (f"the norm dips at the training points on {names[yes[0]]} ellipses "
            f"(median / anchor {fmt(ell.loc[yes[0], 'dip'], 2)}) but not on {names[no[0]]} "
            f"ones ({fmt(ell.loc[no[0], 'dip'], 2)}: higher at the digits than along the "
            "ellipse)")


def section(out: Path) -> list[str]:
    """Study D's part of the report: per kind, medians over trajectories and networks, and
    the two claims (dips at the training points; order random > different > same)."""
    import pandas as pd

    folder = out / FOLDER
    lines = ["## D. Sensitivity on and off the data manifold", ""]
    recs = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.json"))] \
        if folder.exists() else []
    if not recs:
        return [*lines, "**Pending**: run `experiments/mnist_study.py study-d`.", ""]
    rows = pd.DataFrame([{**r, "net": rec["seed"]} for rec in recs for r in rec["rows"]])
    agg = rows.groupby("kind", sort=False).agg(
        n=("kind", "size"), norm=("jacobian_norm_mean", "median"),
        anchor=("anchor_jacobian_norm_mean", "median"),
        dip=("median_over_anchor", "median"), dip_min=("median_over_anchor", "min"),
        density=("transition_density", "median"),
        density_ratio=("anchor_density_ratio", "median")).reindex(list(KINDS))
    lines += [
        f"{len(recs)} networks (ReLU MLP 512x2, seeds {', '.join(str(r['seed']) for r in recs)}"
        f"; train accuracy {', '.join(fmt(r['train_accuracy'], 4) for r in recs)}), "
        f"{len(rows)} trajectories. Medians over trajectories:", "",
        "| trajectory | n | mean ‖J‖_F along it | ‖J‖_F at the anchors | median / anchor "
        "(min) | transitions per unit length | density near anchors / elsewhere |",
        "|---|---:|---:|---:|---|---:|---:|"]
    for kind, r in agg.iterrows():
        lines.append(f"| {kind} | {int(r['n'])} | {fmt(r['norm'], 4)} | {fmt(r['anchor'], 4)} "
                     f"| {fmt(r['dip'], 2)} ({fmt(r['dip_min'], 2)}) | {fmt(r['density'], 2)} "
                     f"| {fmt(r['density_ratio'], 2)} |")
    order_norm = agg.loc["random", "norm"] > agg.loc["different_class", "norm"] > \
        agg.loc["same_class", "norm"]
    order_dens = agg.loc["random", "density"] > agg.loc["different_class", "density"] > \
        agg.loc["same_class", "density"]
    ell = agg.loc[["same_class", "different_class"]]
    dips = bool((ell["dip"] > 1).all())
    fewer = bool((ell["density_ratio"] < 1).all())
    lines += [
        "", f"- The Jacobian norm dips at the training points (median / anchor > 1 on both "
        f"kinds of ellipse through training digits): **{'yes' if dips else 'no'}** "
        f"({fmt(ell.loc['same_class', 'dip'], 2)} same class, "
        f"{fmt(ell.loc['different_class', 'dip'], 2)} different classes).",
        f"- Fewer transitions near the training points (ratio < 1): "
        f"**{'yes' if fewer else 'no'}** ({fmt(ell.loc['same_class', 'density_ratio'], 2)}, "
        f"{fmt(ell.loc['different_class', 'density_ratio'], 2)}).",
        f"- Mean norm orders random > different class > same class: "
        f"**{'yes' if order_norm else 'no'}**; transition density: "
        f"**{'yes' if order_dens else 'no'}**.",
        f"- On 8x8 digits and MNIST-1D (`docs/results/novak.md`) the dips were not reproduced; "
        f"on real 28x28 digits {_dip_text(ell)} and transitions "
        f"{'are' if fewer else 'are not'} rarer there.", ""]
    figs = sorted((out / FIGURES).glob("study_d_profiles_seed*.png"))
    lines += [f"![{p.stem}]({FIGURES}/{p.name})" for p in figs[:1]]
    return [*lines, ""]
