"""Seconds of each step of the README's Python quick start, on this machine.

    python benchmarks/quickstart.py

Runs the quick start's calls in order (digits, an MLP of width 256, train to 100% training
accuracy, esd, analyze, jacobians, analyze with layers="all") and prints one line per step,
then the load average, so the README's times can be checked against a rerun.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    import jacspec
    from jacspec.models.train import train

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    data = jacspec.load_dataset("digits")
    model = jacspec.mlp(data.input_shape, 10, width=256, seed=0)
    steps = [
        ("train", lambda: train(model, data)),
        ("esd", lambda: jacspec.esd(model, data)),
        ("analyze", lambda: jacspec.analyze(model, data)),
        ("jacobians", lambda: jacspec.jacobians(model, data)),
        ("analyze_layers_all", lambda: jacspec.analyze(model, data, layers="all")),
    ]
    total = 0.0
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        total += dt
        print(f"{name:20s} seconds={dt:.1f}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"quickstart seconds={total:.1f}")


if __name__ == "__main__":
    main()
