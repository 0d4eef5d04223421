"""Study B of the mnist study: the flow of the Jacobian spectrum during training (seed 000).

A ReLU MLP 512x2 trained with Adam (lr 1e-3, batch 64) on the 4,000 mnist5k digits with the
true labels and with random labels, seeds 0 and 1 (4 runs), until 100% train accuracy. A
:class:`jacspec.track.Tracker` (200 training digits fixed once, float64 Jacobians, softmax
output) records the ESD metrics at log-spaced steps (0, 1, 2, 3, 5, 8, ... up to the end)
into ``mnist_study/study_b/<run>.jsonl``, an append-only store; the ESD eigenvalues at four
checkpoints (init, about 1% and 10% of the run, the end) go to
``mnist_study/study_b/<run>_esd.npz``. A run whose store
holds its final row is skipped, so an interrupted stage resumes (a run cut short is redone:
training is deterministic, so its rows are the same).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from mnist_study_common import TRAIN, fmt

FOLDER = "mnist_study/study_b"
FIGURES = "mnist_study"
RUNS = [("true", False, 0), ("true", False, 1), ("random", True, 0), ("random", True, 1)]
METRICS = ("alpha", "lambda_max", "stable_rank", "entropy", "rank", "trace", "jacobian_norm")
PLOTTED = ("alpha", "lambda_max", "stable_rank", "entropy")


def log_steps(limit: int, per_decade: int = 8) -> list[int]:
    """0 and the distinct integers of a geometric grid from 1 to ``limit``."""
    grid = np.geomspace(1, max(limit, 1), int(per_decade * math.log10(max(limit, 10))) + 1)
    return sorted({0, *np.unique(np.round(grid).astype(int)).tolist()})


def train_tracked(name: str, random_labels: bool, seed: int, folder: Path, *,
                  smoke: bool = False, log: Any = None) -> dict[str, Any]:
    """Train one network with a tracker at log-spaced steps; returns the run's record."""
    import torch
    from torch.nn import functional as F

    from jacspec.data.datasets import load_dataset
    from jacspec.models.builders import mlp
    from jacspec.models.train import evaluate
    from jacspec.spectra.exact import esd
    from jacspec.track import Tracker

    tag = f"{name}_seed{seed}"
    store, marker = folder / f"{tag}.jsonl", folder / f"{tag}.done.json"
    if marker.exists():
        return json.loads(marker.read_text())
    for stale in (store, folder / f"{tag}_esd.npz"):
        stale.unlink(missing_ok=True)  # a run cut short is redone from its first step
    n_train = 200 if smoke else TRAIN["n_train"]
    data = load_dataset("mnist5k", "train", seed=TRAIN["data_seed"], flatten=False)
    data = data.subset(n_train, seed=TRAIN["data_seed"]) if n_train < len(data) else data
    if random_labels:
        data = data.with_random_labels(TRAIN["data_seed"])
    width, budget = (16, 60) if smoke else (512, TRAIN["max_steps"])
    model = mlp(data.input_shape, data.num_classes, width=width, depth=2, seed=seed)
    tracker = Tracker(data, METRICS, every=1, n=40 if smoke else 200, seed=0,
                      store=store, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    marks = set(log_steps(budget, per_decade=3 if smoke else 8))
    x, y = data.x, data.y
    step, t0, snapshots = 0, time.perf_counter(), {}
    acc = 0.0
    done = False
    tracker.step(model, 0, force=True)
    snapshots[0] = {k: v.clone() for k, v in model.state_dict().items()}
    while step < budget and not done:
        order = torch.randperm(len(y), generator=gen)
        model.train()
        for start in range(0, len(y), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
            if step in marks:
                tracker.step(model, step, force=True)
                snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
            if step >= budget:
                break
        model.eval()
        with torch.no_grad():
            acc, _ = evaluate(model, x, y)
        done = acc >= 1.0
    if step not in tracker.steps:
        tracker.step(model, step, force=True)
    snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
    # the ESD at four checkpoints: init, ~1% and ~10% of the run, the end
    steps = sorted(snapshots)
    chosen = sorted({0, _nearest(steps, step / 100), _nearest(steps, step / 10), step})
    probe = tracker.probe[0]
    arrays = {}
    final = {k: v.clone() for k, v in model.state_dict().items()}
    for s in chosen:
        model.load_state_dict(snapshots[s])
        arrays[f"step_{s}"] = np.asarray(esd(model.eval(), probe, output="softmax",
                                             dtype=torch.float64).eigenvalues, float)
    model.load_state_dict(final)
    np.savez_compressed(folder / f"{tag}_esd.npz", **arrays)
    record = {"run": tag, "labels": name, "seed": seed, "steps": step, "train_accuracy": acc,
              "converged": bool(done), "seconds": time.perf_counter() - t0,
              "esd_steps": chosen}
    marker.write_text(json.dumps(record) + "\n")
    if log is not None:
        print(f"study-b: {tag} {step} steps, train acc {acc:.4f}, "
              f"{record['seconds']:.0f} s", file=log, flush=True)
    return record


def _nearest(steps: list[int], target: float) -> int:
    return min(steps, key=lambda s: abs(math.log1p(s) - math.log1p(target)))


def run(out: Path, *, smoke: bool = False, log: Any = None) -> list[dict[str, Any]]:
    """Every run of study B (finished ones skipped), then its figures."""
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    records = [train_tracked(name, rl, seed, folder, smoke=smoke, log=log)
               for name, rl, seed in RUNS]
    figures(out)
    return records


def figures(out: Path) -> list[Path]:
    """``study_b_flow.png`` (the metrics against step, log axis, per run) and
    ``study_b_esd.png`` (the ESDs at the four checkpoints of seed 0, true vs random)."""
    from matplotlib.figure import Figure

    from jacspec.track import Tracker

    folder, figdir = out / FOLDER, out / FIGURES
    figdir.mkdir(parents=True, exist_ok=True)
    colors = {"true": "tab:blue", "random": "tab:orange"}
    fig = Figure(figsize=(11, 7), constrained_layout=True)
    axes = fig.subplots(2, 2).ravel()
    for name, _, seed in RUNS:
        path = folder / f"{name}_seed{seed}.jsonl"
        if not path.exists():
            continue
        frame = Tracker.load(path).frame()
        for ax, m in zip(axes, PLOTTED, strict=True):
            ax.plot(frame["step"] + 1, frame[m], color=colors[name], marker=".",
                    ls="-" if seed == 0 else "--", label=f"{name} labels, seed {seed}")
    for ax, m in zip(axes, PLOTTED, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("optimizer step + 1")
        ax.set_title(m)
        if m == "lambda_max":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Jacobian ESD metrics during training (MLP 512x2, Adam, 200 train digits)")
    paths = [figdir / "study_b_flow.png"]
    fig.savefig(paths[0], dpi=100)
    fig = Figure(figsize=(11, 4), constrained_layout=True)
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ("true", "random"), strict=True):
        path = folder / f"{name}_seed0_esd.npz"
        if not path.exists():
            continue
        with np.load(path) as npz:
            items = sorted(npz.items(), key=lambda kv: int(kv[0].split("_")[1]))
            pos = [v[v > 0] for _, v in items]
            lo = min(p.min() for p in pos if p.size)
            hi = max(p.max() for p in pos if p.size)
            edges = np.geomspace(lo, hi, 60)
            for k, ((key, ev), p) in enumerate(zip(items, pos, strict=True)):
                h, _ = np.histogram(p, bins=edges)
                ax.stairs(h / ev.size / np.diff(np.log10(edges)), edges,
                          color=f"C{k}", label=key.replace("_", " "))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of M/n")
        ax.set_ylabel("density per decade")
        ax.set_title(f"{name} labels, seed 0")
        ax.legend(fontsize=8)
    paths.append(figdir / "study_b_esd.png")
    fig.savefig(paths[1], dpi=100)
    return paths


def section(out: Path) -> list[str]:
    """Study B's part of the report."""
    from jacspec.track import Tracker

    folder = out / FOLDER
    lines = ["## B. The spectrum during training", ""]
    done = [json.loads(p.read_text()) for p in sorted(folder.glob("*.done.json"))] \
        if folder.exists() else []
    if not done:
        return [*lines, "**Pending**: run `experiments/mnist_study.py study-b`.", ""]
    lines += [f"{len(done)} of {len(RUNS)} runs done (ReLU MLP 512x2, Adam 1e-3, batch 64, "
              "all 4,000 training digits; metrics on 200 fixed training digits, float64 "
              "Jacobians, at log-spaced steps; `jacspec.track.Tracker` stores in "
              f"`{FOLDER}/`).", "",
              "| run | steps to 100% | " + " | ".join(f"{m} init → end" for m in PLOTTED)
              + " |", "|---|---:|" + "---|" * len(PLOTTED)]
    for rec in done:
        frame = Tracker.load(folder / f"{rec['run']}.jsonl").frame()
        cells = [f"{fmt(frame[m].iloc[0])} → {fmt(frame[m].iloc[-1])}" for m in PLOTTED]
        reached = str(rec["steps"]) if rec["converged"] else f"{rec['steps']} (missed)"
        lines.append(f"| {rec['run']} | {reached} | " + " | ".join(cells) + " |")
    lines += ["", f"![flow]({FIGURES}/study_b_flow.png)", "",
              f"![esd]({FIGURES}/study_b_esd.png)", ""]
    return lines
