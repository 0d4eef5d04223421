"""Cost of one ``Tracker.step`` on a 256-example probe of digits, against one training step.

Model: jacspec's MLP 64-256-256-10 (ReLU) with Dropout(0.1) before the read-out, in training
mode (as in a real loop: the tracker evaluates it in eval mode and restores the flags).
Training step: SGD with momentum on a batch of 128 (forward, backward, optimizer step).
Tracker: the default metrics (rank, trace, lambda_max, stable_rank, entropy, alpha from
``analyze``, and the mean Jacobian norm), float32 like the model. Also timed: one plain
``jacspec.analyze`` call on the same probe (default settings, randomized null included, and
without it). Medians over ``--repeats`` calls, one intra-op thread (``--threads``).

Last line: ``seconds_per_step=<x> ratio_to_train_step=<y>``.

    python benchmarks/tracker_cost.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import jacspec


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = jacspec.load_dataset("digits")
    net = jacspec.mlp(64, 10, width=256, depth=2, seed=0)
    model = nn.Sequential(*list(net)[:-1], nn.Dropout(0.1), list(net)[-1]).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def train_step() -> None:
        idx = torch.randint(0, len(data), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    tracker = jacspec.Tracker(data, every=1, n=args.probe, seed=0)
    probe = tracker.probe
    counter = iter(range(10**9))

    t_train = median_seconds(train_step, max(args.repeats * 5, 25))
    t_track = median_seconds(lambda: tracker.step(model, next(counter)), args.repeats)
    frozen = _eval_view(model)
    t_analyze = median_seconds(lambda: jacspec.analyze(frozen, probe), args.repeats)
    t_analyze_nonull = median_seconds(
        lambda: jacspec.analyze(frozen, probe, randomize=False), args.repeats)
    t_norms = median_seconds(lambda: jacspec.jacobian_norms(frozen, probe), args.repeats)
    print(f"probe: {args.probe} digits examples (64-d), MLP 64-256-256-10 + Dropout, "
          f"{args.threads} thread(s), medians of {args.repeats} calls")
    print(f"training step (batch 128, SGD momentum)       {t_train * 1e3:9.2f} ms")
    print(f"tracker.step (default metrics)                {t_track * 1e3:9.2f} ms")
    print(f"jacspec.analyze (defaults, randomized null)   {t_analyze * 1e3:9.2f} ms")
    print(f"jacspec.analyze (randomize=False)             {t_analyze_nonull * 1e3:9.2f} ms")
    print(f"jacspec.jacobian_norms                        {t_norms * 1e3:9.2f} ms")
    print(f"tracker.step / training step                  {t_track / t_train:9.1f}")
    print(f"tracker.step / analyze (defaults)             {t_track / t_analyze:9.2f}")
    print(f"tracker.step / (analyze without null + norms) "
          f"{t_track / (t_analyze_nonull + t_norms):9.2f}")
    for every in (100, 500):
        print(f"overhead every {every:>3} steps                       "
              f"{100 * t_track / (every * t_train):8.1f} %")
    print(f"seconds_per_step={t_track:.4g} ratio_to_train_step={t_track / t_train:.4g}")


def _eval_view(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy (the plain analyze call needs one: Dropout is in training mode)."""
    import copy

    return copy.deepcopy(model).eval()


if __name__ == "__main__":
    main()
