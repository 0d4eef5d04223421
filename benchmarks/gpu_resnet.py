"""ResNet-20 on CIFAR-shaped inputs on one GPU: Jacobian rate and the exact ESD at n = 50,000.

Run on a machine with a CUDA device (goal: under 8 minutes on one H100):

    python benchmarks/gpu_resnet.py            # n = 50,000
    python benchmarks/gpu_resnet.py --n 5000   # a shorter run

Stages, in one process (GPU memory is reported by ``torch.cuda.max_memory_allocated``):

1. Jacobian rate of jacspec's engine on 4,096 standard-normal 3x32x32 inputs generated on
   the device, for ``method="loop"`` (one backward per class) and ``"batched_grad"`` (the k
   cotangents vmapped), at the batch size given (default 512); TF32 is off while Jacobians
   run (jacspec sets cuDNN's and cuBLAS's float32 precision to "ieee"); and
   ``vmap(jacrev)`` on the same inputs, for comparison.
2. The exact ESD of M/n at n = 50,000 with the faster method: softmax rows in the
   class-sum-zero basis, (k-1)d = 27,648 <= n, so the dual Gram, accumulated on the device
   in float64 (blocks on and above the diagonal), and ``torch.linalg.eigvalsh`` in float64 on
   the device; only the eigenvalues come back to the host.

Last line: ``model=resnet20 n=N seconds=S side=dual jacobian_examples_per_s=R
gpu_peak_gib=G device=NAME``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jacspec  # noqa: E402

CIFAR, K = (3, 32, 32), 10


class DeviceInputs:
    """``n`` standard-normal CIFAR-shaped inputs made on ``device`` chunk by chunk."""

    def __init__(self, n: int, device: torch.device, chunk: int = 4096, seed: int = 0) -> None:
        self.n, self.device, self.chunk, self.seed = n, device, chunk, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        for start in range(0, self.n, self.chunk):
            m = min(self.chunk, self.n - start)
            yield torch.randn(m, *CIFAR, generator=gen, device=self.device), None


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], None]) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def rate(model: torch.nn.Module, data: DeviceInputs, method: str, batch_size: int) -> float:
    def run() -> None:
        for _ in jacspec.iter_jacobians(model, data, device=data.device, method=method,
                                        batch_size=batch_size):
            pass

    run()  # warm-up (cuDNN autotuning, allocator)
    return len(data) / timed(run)


def vmap_jacrev_rate(model: torch.nn.Module, data: DeviceInputs, batch: int = 256) -> float:
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(xi: torch.Tensor) -> torch.Tensor:
        return torch.softmax(functional_call(model, (params, buffers), (xi[None],)), 1)[0]

    jac = vmap(jacrev(f))

    def run() -> None:
        for x, _ in data:
            for s in range(0, x.shape[0], batch):
                jac(x[s : s + batch])

    run()
    return len(data) / timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="examples of the exact ESD")
    parser.add_argument("--batch-size", type=int, default=512, help="examples per batch")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke run")
    parser.add_argument("--probe", type=int, default=4096, help="examples of the rate stage")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_resnet: no CUDA device here; run this on a machine with a GPU "
              "(or --device cpu --n 500 --probe 128 for a smoke run)")
        sys.exit(1)
    from jacspec.jacobian.source import JacobianSource
    from jacspec.spectra.exact import esd_from_gram
    from jacspec.spectra.gram import gram_from_source

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(f"torch {torch.__version__}, {name}", flush=True)
    model = jacspec.resnet(CIFAR, K, depth=20, seed=0).eval().to(device)
    probe = DeviceInputs(args.probe, device, seed=1)
    rates = {m: rate(model, probe, m, args.batch_size) for m in ("loop", "batched_grad")}
    rates["vmap_jacrev"] = vmap_jacrev_rate(model, probe)
    for m, r in rates.items():
        print(f"  {m:14s} {r:9.0f} examples/s", flush=True)
    method = max(("loop", "batched_grad"), key=rates.__getitem__)
    print(f"jacspec / vmap(jacrev) = {rates[method] / rates['vmap_jacrev']:.2f}x "
          f"(method {method})", flush=True)

    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    source = JacobianSource.from_model(model, DeviceInputs(args.n, device), device=device,
                                       method=method, batch_size=args.batch_size)
    g = gram_from_source(source)
    sync()
    t1 = time.perf_counter()
    e = esd_from_gram(g)
    sync()
    t2 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if gpu else float("nan")
    on_device = isinstance(g.matrix, torch.Tensor) and g.matrix.device.type == device.type
    print(f"esd: n={e.n} side={e.side} rank={e.rank} lambda_max={e.eigenvalues[0]:.6g}; "
          f"Jacobians + Gram {t1 - t0:.1f} s, eigenvalues {t2 - t1:.1f} s; Gram on the device: "
          f"{on_device}", flush=True)
    print(f"model=resnet20 n={e.n} seconds={t2 - t0:.1f} side={e.side} "
          f"jacobian_examples_per_s={rates[method]:.0f} gpu_peak_gib={peak:.1f} "
          f"device={name.replace(' ', '_')}")


if __name__ == "__main__":
    main()
