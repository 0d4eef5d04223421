"""Speed of jacspec's transition counting along a finely sampled closed trajectory.

Novak et al. (ICLR 2018) count linear-region transitions along ellipses sampled at 2^20
points. This times :func:`jacspec.sensitivity.regions.count_transitions` (activation codes of whole
batches of trajectory points, intercepted at the activation calls, consecutive codes
compared batch by batch) on a ReLU MLP (default 784-512-512-10 at initialisation) along an
ellipse through three standard-normal points (:func:`jacspec.sensitivity.trajectories.ellipse`), the
points generated lazily from ``t``.

Against it, in the same run, on ``--naive-points`` points of the same ellipse (coarser),
the code a user would write without jacspec: forward hooks on the ``nn.ReLU`` modules that
record ``h > 0``, (a) one point at a time in a Python loop, (b) the same hooks on batches.
Every alternative must count the same transitions on that subset (checked).

If 2^20 points would take longer than ``--budget`` seconds (estimated from a 2^14-point
probe), the largest power of two that fits is timed and ``seconds_2e20`` is extrapolated
linearly (the work is linear in the number of points); the output says so.

Last line: ``points_per_second=<x> seconds_2e20=<t>``.

    .venv/bin/python benchmarks/transitions.py [--widths 512,512] [--input 784] [--budget 90]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import nn

from jacspec.models.builders import mlp
from jacspec.sensitivity.regions import count_transitions
from jacspec.sensitivity.trajectories import ellipse

PAPER_POINTS = 2**20


def hook_codes(model: nn.Module) -> tuple[list[torch.Tensor], list[object]]:
    """Forward hooks on every ``nn.ReLU``: each call appends ``(h > 0)`` of its input."""
    store: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, inp, _out: store.append(inp[0] > 0))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    return store, handles


@torch.no_grad()
def naive_loop(model: nn.Module, points: torch.Tensor) -> int:
    """Per-point loop: one forward per point, codes from the hooks, Hamming distance to the
    previous point's code (an open path: no wrap-around)."""
    store, handles = hook_codes(model)
    total, prev = 0, None
    try:
        for z in points:
            store.clear()
            model(z[None])
            code = torch.cat([c.reshape(-1) for c in store])
            if prev is not None:
                total += int((code != prev).sum())
            prev = code
    finally:
        for h in handles:
            h.remove()
    return total


@torch.no_grad()
def batched_hooks(model: nn.Module, points: torch.Tensor, batch: int) -> int:
    """The same hooks on batches of points, carrying the last code between batches."""
    store, handles = hook_codes(model)
    total, prev = 0, None
    try:
        for chunk in points.split(batch):
            store.clear()
            model(chunk)
            codes = torch.cat([c.reshape(len(chunk), -1) for c in store], dim=1)
            chain = codes if prev is None else torch.cat([prev, codes])
            total += int((chain[1:] != chain[:-1]).sum())
            prev = codes[-1:]
    finally:
        for h in handles:
            h.remove()
    return total


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=int, default=784, help="input dimension (784: MNIST)")
    parser.add_argument("--widths", default="512,512", help="hidden widths, comma-separated")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budget", type=float, default=90.0,
                        help="seconds allowed for the timed jacspec run (default 90)")
    parser.add_argument("--log2-points", type=int, default=None,
                        help="time exactly 2^N points (default: 20 if it fits the budget)")
    parser.add_argument("--naive-points", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steady on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    if not widths or len(set(widths)) != 1:
        raise SystemExit("--widths must be one or more equal hidden widths, e.g. 512,512")
    model = mlp(args.input, args.classes, width=widths[0], depth=len(widths), seed=args.seed)
    model.eval()
    gen = torch.Generator().manual_seed(args.seed)
    anchors = torch.randn(3, args.input, generator=gen)
    traj = ellipse(anchors[0], anchors[1], anchors[2])
    arch = "-".join(str(v) for v in [args.input, *widths, args.classes])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"ReLU MLP {arch} (init), ellipse through 3 N(0, I) points, batch {args.batch_size}")

    def jacspec_count(num: int, closed: bool = True) -> int:
        return count_transitions(model, traj, num_points=num, batch_size=args.batch_size,
                                 closed=closed, keep_distances=False).total

    probe = 2**14
    jacspec_count(probe)  # warm-up
    t_probe, _ = timed(lambda: jacspec_count(probe))
    if args.log2_points is not None:
        log2 = int(args.log2_points)
    else:
        fits = math.floor(math.log2(max(args.budget / (t_probe / probe), probe)))
        log2 = max(14, min(20, fits))
    num = 2**log2
    t_run, total = timed(lambda: jacspec_count(num))
    rate = num / t_run
    seconds_2e20 = t_run * PAPER_POINTS / num
    how = "timed" if num == PAPER_POINTS else (
        f"extrapolated linearly from 2^{log2} = {num} points")
    print(f"jacspec count_transitions: 2^{log2} = {num} points in {t_run:.2f} s "
          f"({rate:,.0f} points/s), {total} transitions (closed)")
    print(f"2^20 = {PAPER_POINTS} points: {seconds_2e20:.1f} s ({how})")

    # the alternatives, on the first points of the same trajectory (open path)
    sub = args.naive_points
    pts = traj(torch.arange(sub, dtype=torch.float64) / sub).float()  # the whole ellipse
    t_j, c_j = timed(lambda: count_transitions(model, pts, closed=False,
                                               batch_size=args.batch_size,
                                               keep_distances=False).total, repeats=3)
    t_loop, c_loop = timed(lambda: naive_loop(model, pts))
    t_hook, c_hook = timed(lambda: batched_hooks(model, pts, args.batch_size), repeats=3)
    if not (c_j == c_loop == c_hook):
        raise SystemExit(f"counts disagree on the subset: jacspec {c_j}, loop {c_loop}, "
                         f"batched hooks {c_hook}")
    print(f"\n{sub} points along the whole ellipse (materialised, open path; {c_j} "
          "transitions, equal in all):")
    print(f"  {'method':34s} {'seconds':>9s} {'points/s':>12s} {'jacspec speed-up':>17s}")
    for name, t in (("jacspec count_transitions", t_j), ("per-point loop + forward hooks", t_loop),
                    ("batched forward hooks", t_hook)):
        print(f"  {name:34s} {t:9.4f} {sub / t:12,.0f} {t / t_j:16.2f}x")
    print(f"jacspec on the full run vs the per-point loop: "
          f"{rate / (sub / t_loop):.1f}x faster")
    print(f"points_per_second={rate:.0f} seconds_2e20={seconds_2e20:.1f}")


if __name__ == "__main__":
    main()
