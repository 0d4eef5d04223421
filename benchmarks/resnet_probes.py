"""Two probes behind the CIFAR ResNet Jacobian rates (``esd_resnet.py``), in one run.

1. One 3x3 convolution of jacspec's ResNet stage shapes (batch 79, C -> C channels),
   forward and input-gradient backward (``aten.convolution_backward``), contiguous (NCHW)
   against channels-last, in GFLOP/s (best of 5), beside a float32 2048^3 GEMM.
2. jacspec's ResNet-56 Jacobians (``iter_jacobians``, 54 examples, seed 0, at
   initialisation) with and without ``torch.set_flush_denormal(True)``, in one process:
   how much of its speed subnormal floats cost.

    python benchmarks/resnet_probes.py   # about a minute on 2 cores
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jacspec  # noqa: E402


def best_seconds(call: Callable[[], object], reps: int = 5) -> float:
    call()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def conv_rates() -> None:
    a = torch.randn(2048, 2048)
    print(f"float32 GEMM {2 * 2048**3 / best_seconds(lambda: a @ a) / 1e9:.0f} GFLOP/s")
    for c, h in ((16, 32), (32, 16), (64, 8)):
        flops = 2 * 79 * h * h * c * c * 9
        w = torch.randn(c, c, 3, 3)
        row = []
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(79, c, h, h).contiguous(memory_format=fmt)
            g = torch.randn(79, c, h, h).contiguous(memory_format=fmt)
            fwd = best_seconds(lambda: F.conv2d(x, w, padding=1))  # noqa: B023
            bwd = best_seconds(lambda: torch.ops.aten.convolution_backward(
                g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,  # noqa: B023
                [True, False, False]))
            row.append(f"fwd {flops / fwd / 1e9:4.0f} bwd {flops / bwd / 1e9:4.0f}")
        print(f"conv 79x{c}x{h}x{h}: contiguous {row[0]}; channels-last {row[1]} GFLOP/s")


def denormal_rates() -> None:
    model = jacspec.resnet((3, 32, 32), 10, depth=56, seed=0).eval()
    x = torch.randn(54, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def rate() -> float:
        def run() -> None:
            for _ in jacspec.iter_jacobians(model, x, progress=False):
                pass
        return len(x) / best_seconds(run, reps=1)

    default = rate()
    torch.set_flush_denormal(True)
    try:
        flushed = rate()
    finally:
        torch.set_flush_denormal(False)
    print(f"resnet56 jacspec ex/s: default {default:.1f}, flush_denormal {flushed:.1f} "
          f"({flushed / default:.2f}x)")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    conv_rates()
    denormal_rates()
