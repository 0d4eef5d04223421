"""Time jacspec.models.train.train on digits' training split (1,437 examples): MLP
64-512-512-10, Adam lr 1e-3, batch 128, to 100% train accuracy with true and with random
labels, on 1 and on the default number of torch threads, side by side.

    .venv/bin/python benchmarks/train_digits.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jacspec.data.datasets import load_dataset
from jacspec.models.builders import mlp
from jacspec.models.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed, true labels only")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to compare (default: 1 and the default)")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    labels = ["true"] if args.quick else ["true", "random"]
    default_threads = torch.get_num_threads()
    data = load_dataset("digits")
    print(f"digits train n={len(data)}, MLP 64-{args.width}-{args.width}-10, Adam lr 1e-3, "
          f"batch 128; torch {torch.__version__}, default threads {default_threads}")
    print(f"{'labels':7} {'threads':>7} {'seed':>4} {'reached':>9} {'epochs':>6} {'steps':>6} "
          f"{'seconds':>8}")
    summary: dict[tuple[str, int], list[float]] = {}
    for lab in labels:
        ds = data.with_random_labels(seed=0) if lab == "random" else data
        for threads in args.threads or sorted({1, default_threads}):
            for seed in seeds:
                model = mlp(64, 10, width=args.width, depth=2, seed=seed)
                t0 = time.perf_counter()
                res = train(model, ds, seed=seed, max_epochs=args.max_epochs, threads=threads)
                wall = time.perf_counter() - t0
                summary.setdefault((lab, threads), []).append(wall)
                print(f"{lab:7} {threads:>7} {seed:>4} {res.reached:>9} {res.epochs:>6} "
                      f"{res.steps:>6} {wall:>8.2f}")
    print("\nmedian seconds (ratio to 1 thread)")
    for (lab, threads), times in sorted(summary.items()):
        base = statistics.median(summary.get((lab, 1), times))
        med = statistics.median(times)
        print(f"{lab:7} threads={threads}: {med:.2f} s  (x{med / base:.2f})")


if __name__ == "__main__":
    main()
