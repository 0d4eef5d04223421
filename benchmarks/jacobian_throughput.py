"""Throughput of jacspec's per-example Jacobians against the torch.func recipes.

Runs in one process, side by side, on
  * an MLP 784-512-512-10 with n=2000 inputs, and
  * jacspec's small CNN on 3x32x32 inputs,
each engine method of jacspec against ``vmap(jacrev(f))`` (the per-sample recipe) and
``jacrev`` of the batch sum (``sum_i f(x_i)`` differentiated w.r.t. the whole batch).
For the MLP it also reports the achieved FLOP rate as a fraction of a large fp32 GEMM
measured in the same run. FLOPs counted: one forward plus k backward passes to the input,
each ``2 * sum_l fan_in_l * fan_out_l`` per example.

Last line: ``speedup_vs_vmap_jacrev=<x> fraction_of_gemm=<y>`` (x: the smaller of the models).

    python benchmarks/jacobian_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacrev, vmap

from jacspec.jacobian.engine import METHODS, jacobians, resolve_method
from jacspec.models.builders import mlp, small_cnn


def interleaved_best(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each run over ``repeats`` rounds, the runs interleaved within each round
    (a load change on a shared machine then hits every alternative alike)."""
    for fn in runs.values():
        fn()  # warm-up
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def per_sample_recipe(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    def f(xi: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(xi[None]), dim=1)[0]

    outs = [vmap(jacrev(f))(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    return torch.cat(outs)


def batch_sum_recipe(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    def f(xb: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(xb), dim=1).sum(0)

    outs = [jacrev(f)(x[i : i + chunk]).transpose(0, 1) for i in range(0, x.shape[0], chunk)]
    return torch.cat(outs)


def mlp_flops(model: nn.Module, n: int, k: int) -> float:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    per = sum(2 * m.in_features * m.out_features for m in layers)
    return float(n * (k + 1) * per)


def run(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    repeats: int,
    chunk: int,
    extra: dict[str, Callable[[], object]] | None = None,
) -> dict:
    model.eval()
    ref = jacobians(model, x[:8])
    torch.testing.assert_close(per_sample_recipe(model, x[:8], 8), ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(batch_sum_recipe(model, x[:8], 8), ref, rtol=1e-4, atol=1e-6)
    runs: dict[str, Callable[[], object]] = {
        m: (lambda m=m: jacobians(model, x, method=m)) for m in METHODS if m != "auto"
    }
    runs["default"] = lambda: jacobians(model, x)
    runs["vmap(jacrev)"] = lambda: per_sample_recipe(model, x, chunk)
    runs["jacrev(batch sum)"] = lambda: batch_sum_recipe(model, x, chunk)
    times = interleaved_best({**runs, **(extra or {})}, repeats)
    n = x.shape[0]
    print(
        f"\n{name}: n={n}, input {tuple(x.shape[1:])}, "
        f"default method: {resolve_method(model, 'auto')}"
    )
    print(f"  {'method':<20} {'seconds':>9} {'examples/s':>12} {'vs vmap(jacrev)':>16}")
    for m, t in times.items():
        if extra and m in extra:
            continue
        print(f"  {m:<20} {t:9.4f} {n / t:12.1f} {times['vmap(jacrev)'] / t:16.2f}x")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, one repeat")
    args = parser.parse_args()
    torch.manual_seed(0)
    repeats = 1 if args.quick else 5
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    size = 2048 if args.quick else 4096
    a, b = torch.randn(size, size), torch.randn(size, size)
    gemm = {"gemm": lambda: a @ b}

    n_mlp = 500 if args.quick else 2000
    net = mlp((784,), 10, width=512, depth=2, seed=0)
    x = torch.randn(n_mlp, 784)
    t_mlp = run("MLP 784-512-512-10", net, x, repeats, chunk=500, extra=gemm)
    rate = 2 * size**3 / t_mlp["gemm"]
    print(f"  fp32 GEMM {size}x{size} (interleaved with the runs above): {rate / 1e9:.1f} GFLOP/s")
    engine = t_mlp["default"]
    frac = mlp_flops(net, n_mlp, 10) / engine / rate
    print(
        f"  MLP achieved {mlp_flops(net, n_mlp, 10) / engine / 1e9:.1f} GFLOP/s "
        f"= {frac:.2f} of GEMM"
    )

    n_cnn = 64 if args.quick else 256
    cnn = small_cnn((3, 32, 32), 10, seed=0)
    xc = torch.rand(n_cnn, 3, 32, 32)
    t_cnn = run("small CNN 3x32x32", cnn, xc, repeats, chunk=64)

    speedups = [t["vmap(jacrev)"] / t["default"] for t in (t_mlp, t_cnn)]
    vs_sum = [t["jacrev(batch sum)"] / t["default"] for t in (t_mlp, t_cnn)]
    print(f"\nspeedup vs jacrev(batch sum): MLP {vs_sum[0]:.2f}x, CNN {vs_sum[1]:.2f}x")
    print(f"speedup_vs_vmap_jacrev={min(speedups):.2f} fraction_of_gemm={frac:.2f}")


if __name__ == "__main__":
    main()
