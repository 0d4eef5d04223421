"""CIFAR ResNets through jacspec: Jacobian throughput against the alternatives, and the exact
ESD of ResNet-20 at n = 10,000 end to end.

One script, each stage in a subprocess of it (so peak RSS is per stage):

1. ``rates``: the machine's float32 GEMM rate (2048 x 2048 matmul), measured before and
   after the Jacobians, in the same process; the FLOPs of one example's Jacobian (k = 10
   classes, 3x32x32 inputs: one forward and k input-gradient backward passes), counted with
   ``torch.utils.flop_counter.FlopCounterMode``; then per-example Jacobians of a CIFAR
   ResNet-20 and ResNet-56 (He et al., option-A shortcuts, eval-mode BatchNorm, seed 0, at
   initialisation) on standard-normal inputs, in alternating rounds so every method sees the
   same machine load (best round kept):
   - jacspec (``jacspec.iter_jacobians``, its default batch rule);
   - jacspec with the batch rule before the saved-activation cap (Jacobian memory only);
   - the per-class recipe of the prior art: one forward over a batch of 128, then one
     backward pass per class over the whole batch;
   - ``vmap(jacrev(f))`` per batch and ``vmap(jacrev(f, chunk_size=2))`` (torch.func).
2. ``esd``: ``jacspec.esd`` of ResNet-20 on n = 10,000 standard-normal 3x32x32 inputs,
   softmax outputs, float32 Jacobians (kd = 30,720 > n: the primal n x n Gram, blocks on
   and above the diagonal in float64), eigenvalues in float64; time split into Jacobians +
   Gram and eigenvalues.

Last line: ``model=resnet20 n=10000 seconds=S peak_rss_gib=G route=primal
jacobian_fraction_of_gemm=F jacobian_speedup_vs_vmap_jacrev=R`` (S, G: the esd stage; F:
jacspec's ResNet-20 Jacobian FLOP rate over the GEMM rate; R: jacspec over vmap(jacrev)).

    python benchmarks/esd_resnet.py             # the full run (about 5 minutes on 2 cores)
    python benchmarks/esd_resnet.py --n 2000    # a smaller esd stage
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jacspec  # noqa: E402
from jacspec.jacobian import engine  # noqa: E402

CIFAR, K = (3, 32, 32), 10


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Inputs:
    """``n`` standard-normal CIFAR-shaped inputs in chunks, regenerated on every pass."""

    def __init__(self, n: int, chunk: int = 2_000, seed: int = 0) -> None:
        self.n, self.chunk, self.seed = n, chunk, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.n, self.chunk):
            yield torch.randn(min(self.chunk, self.n - start), *CIFAR, generator=gen), None


def resnet(depth: int) -> torch.nn.Module:
    return jacspec.resnet(CIFAR, K, depth=depth, seed=0).eval()


def gemm_rate(size: int = 2048, reps: int = 6) -> float:
    """Best float32 ``size x size`` matmul rate of ``reps`` runs, FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def jacobian_flops(model: torch.nn.Module, batch: int = 4) -> float:
    """FLOPs of one example's softmax Jacobian: one forward, K input-gradient backwards."""
    from torch.utils.flop_counter import FlopCounterMode

    m = resnet_copy(model)
    x = torch.randn(batch, *CIFAR, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        out = torch.softmax(m(x), dim=1)
        for c in range(K):
            out[:, c].sum().backward(retain_graph=c < K - 1, inputs=[x])
    return fc.get_total_flops() / batch


def resnet_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    m.requires_grad_(False)
    return m


def per_class_recipe(model: torch.nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """The prior art's recipe on a copy of ``model``."""
    recipe_on(resnet_copy(model), x, batch)


def recipe_on(m: torch.nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Per batch, one forward, one backward per class (``m`` used as given)."""
    for s in range(0, x.shape[0], batch):
        xb = x[s : s + batch].clone().requires_grad_(True)
        out = torch.softmax(m(xb), dim=1)
        rows = [torch.autograd.grad(out[:, c].sum(), xb, retain_graph=c < K - 1)[0]
                for c in range(K)]
        torch.stack(rows, dim=1)


def compiled_recipe(model: torch.nn.Module) -> Callable[[torch.Tensor], None]:
    """The per-class recipe on ``torch.compile(model)`` (inductor): eval-mode BatchNorm and
    ReLU fuse into the convolutions' neighbours in the compiled backward."""
    return partial(recipe_on, torch.compile(resnet_copy(model)))


def vmap_jacrev(model: torch.nn.Module, x: torch.Tensor, batch: int = 32,
                chunk_size: int | None = None) -> None:
    from torch.func import functional_call, jacrev, vmap

    m = resnet_copy(model)
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = {k: v.detach() for k, v in m.named_buffers()}

    def f(xi: torch.Tensor) -> torch.Tensor:
        out = functional_call(m, (params, buffers), (xi[None],))
        return torch.softmax(out, dim=1)[0]

    jac = vmap(jacrev(f, chunk_size=chunk_size))
    for s in range(0, x.shape[0], batch):
        jac(x[s : s + batch])


def jacspec_rate(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None
                 ) -> None:
    for _ in jacspec.iter_jacobians(model, x, batch_size=batch_size):
        pass


def stage_rates(n: int) -> dict[str, Any]:
    torch.manual_seed(0)
    res: dict[str, Any] = {"gemm_before": gemm_rate()}
    for depth, count, slow in ((20, 384, 32), (56, 128, 8)):
        model = resnet(depth)
        x = torch.randn(count, *CIFAR)
        old_rule = engine.batch_size_for(K * 3072, 4)  # Jacobian memory only
        methods: dict[str, tuple[Callable[[], None], int]] = {
            "jacspec": (partial(jacspec_rate, model, x), count),
            "jacspec_old_batch_rule": (partial(jacspec_rate, model, x, old_rule), count),
            "per_class_recipe": (partial(per_class_recipe, model, x), count),
            "vmap_jacrev": (partial(vmap_jacrev, model, x[:slow]), slow),
            "vmap_jacrev_chunk2": (partial(vmap_jacrev, model, x[:slow], chunk_size=2), slow),
        }
        recipe = compiled_recipe(model)
        t = time.perf_counter()
        recipe(x)  # compiles (count is a multiple of the batch of 128: one shape)
        compile_s = time.perf_counter() - t
        methods["per_class_recipe_compiled"] = (partial(recipe, x), count)
        best: dict[str, float] = {}
        for _ in range(2):
            for name, (call, m) in methods.items():
                t = time.perf_counter()
                call()
                best[name] = max(best.get(name, 0.0), m / (time.perf_counter() - t))
        res[f"resnet{depth}"] = {"examples_per_s": best, "flops": jacobian_flops(model),
                                 "old_batch": old_rule, "compile_s": compile_s,
                                 "batch": engine.batch_size_for(
                                     K * 3072, 4, saved=engine.saved_bytes_per_example(
                                         resnet_copy(model), torch.nn.Softmax(dim=1),
                                         x[:4]))}
    res["gemm_after"] = gemm_rate()
    return res


def stage_esd(n: int) -> dict[str, Any]:
    from jacspec.jacobian.source import JacobianSource
    from jacspec.spectra.exact import esd_from_gram
    from jacspec.spectra.gram import gram_from_source

    model = resnet(20)
    t0 = time.perf_counter()
    source = JacobianSource.from_model(model, Inputs(n), progress=False)
    g = gram_from_source(source)
    t1 = time.perf_counter()
    e = esd_from_gram(g)
    t2 = time.perf_counter()
    return {"n": e.n, "side": e.side, "route": g.settings.get("route"), "rank": e.rank,
            "lambda_max": float(e.eigenvalues[0]), "seconds": t2 - t0,
            "seconds_jacobians_gram": t1 - t0, "seconds_eig": t2 - t1}


STAGES = {"rates": stage_rates, "esd": stage_esd}


def _stage(name: str, n: int, work: Path) -> dict[str, Any]:
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--stage", name, "--n", str(n), "--out", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="examples of the esd stage")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        res = STAGES[args.stage](args.n)
        res["peak_rss_gib"] = peak_rss_gib()
        Path(args.out).write_text(json.dumps(res))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rates = _stage("rates", args.n, Path(tmp))
        gemm = max(rates["gemm_before"], rates["gemm_after"])
        print(f"float32 GEMM {rates['gemm_before'] / 1e9:.0f} GFLOP/s before, "
              f"{rates['gemm_after'] / 1e9:.0f} after", flush=True)
        for depth in (20, 56):
            r = rates[f"resnet{depth}"]
            ex = r["examples_per_s"]
            print(f"resnet{depth}: {r['flops'] / 1e9:.3f} GFLOP per example's Jacobian; "
                  f"jacspec batch {r['batch']} (old rule {r['old_batch']}); "
                  f"torch.compile of the recipe {r['compile_s']:.1f} s, first call",
                  flush=True)
            for name, rate in ex.items():
                print(f"  {name:24s} {rate:7.1f} ex/s  {rate * r['flops'] / 1e9:6.1f} GFLOP/s "
                      f"({rate * r['flops'] / gemm:.2f} of GEMM)  jacspec/this "
                      f"{ex['jacspec'] / rate:.2f}x", flush=True)
        esd = _stage("esd", args.n, Path(tmp))
    print(f"esd: n={esd['n']} side={esd['side']} rank={esd['rank']} "
          f"lambda_max={esd['lambda_max']:.6g}; Jacobians + Gram "
          f"{esd['seconds_jacobians_gram']:.1f} s, eigenvalues {esd['seconds_eig']:.1f} s",
          flush=True)
    r20 = rates["resnet20"]
    frac = r20["examples_per_s"]["jacspec"] * r20["flops"] / gemm
    vs_vmap = r20["examples_per_s"]["jacspec"] / r20["examples_per_s"]["vmap_jacrev"]
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"model=resnet20 n={esd['n']} seconds={esd['seconds']:.1f} "
          f"peak_rss_gib={esd['peak_rss_gib']:.2f} route={esd['side']} "
          f"jacobian_fraction_of_gemm={frac:.2f} jacobian_speedup_vs_vmap_jacrev={vs_vmap:.2f}")


if __name__ == "__main__":
    main()
