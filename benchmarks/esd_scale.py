"""Exact Jacobian ESDs at MNIST and CIFAR scale, by the direct and the factored route.

One script, each stage in a subprocess of it (so peak RSS is per stage):

1. MNIST scale: n = 60,000 standard-normal inputs of dimension 784, jacspec's MLP
   784-512-512-10 at its default initialisation, softmax outputs; exact ESD by the direct
   route (dual Gram 7,056 x 7,056) and the factored route (rows A_i L through the first
   layer, dual 4,608 x 4,608), eigenvalues compared (max |diff| / lambda_max);
2. the torch.func recipe a user would write on the same case: ``vmap(jacrev)`` per batch,
   the dual Gram ``sum_i J_i^T J_i`` (7,840 x 7,840, float64) accumulated, then
   ``torch.linalg.eigvalsh``;
3. CIFAR scale: n = 50,000 inputs 3x32x32, MLP 3072-512-512-10, factored route, exact;
4. the Gram stage alone at n = 60,000: the same float32 rows (seeded normal, 4,608 wide as
   the factored dual) folded into a float64 dual Gram by a full ``addmm_`` per chunk (the
   update jacspec used before) and by jacspec's one-triangle update (``dsyrk``), chunk by
   chunk in alternation, so both see the same machine load.

Last line: ``n=50000 seconds=<t> peak_rss_gib=<m> route=factored speedup_vs_direct=<x>
gram_speedup_vs_addmm=<y>`` (CIFAR stage's time and RSS, speed-up of factored over direct at
n = 60,000, speed-up of the triangular Gram update over ``addmm_``).

    python benchmarks/esd_scale.py            # the full run (several minutes on 2 cores)
    python benchmarks/esd_scale.py --quick    # n = 3,000 / 2,500 smoke run
    python benchmarks/esd_scale.py --cifar    # the CIFAR-sized SLQ estimate of a CNN
                                              # (benchmarks/esd_scale_cifar.py)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jacspec.jacobian.source import JacobianSource  # noqa: E402
from jacspec.models.builders import mlp  # noqa: E402
from jacspec.spectra.exact import esd_from_gram  # noqa: E402
from jacspec.spectra.gram import DUAL_CHUNK_ROWS, _DualAccumulator, gram_from_source  # noqa: E402

MNIST, CIFAR = (784,), (3, 32, 32)


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Inputs:
    """``n`` standard-normal inputs of ``shape`` in chunks, regenerated on every pass."""

    def __init__(self, n: int, shape: tuple[int, ...], chunk: int = 5_000, seed: int = 0):
        self.n, self.shape, self.chunk, self.seed = n, shape, chunk, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.n, self.chunk):
            yield torch.randn(min(self.chunk, self.n - start), *self.shape, generator=gen), None


def make_model(shape: tuple[int, ...], width: int = 512) -> torch.nn.Module:
    """jacspec's MLP ``d-width-width-10`` at its default initialisation (seed 0)."""
    return mlp(shape, 10, width=width, depth=2, seed=0).eval()


def exact_esd(
    model: torch.nn.Module, n: int, shape: tuple[int, ...], *, route: str, chunk: int = 5_000
) -> dict[str, Any]:
    """Exact ESD of ``M/n`` (softmax, smaller Gram side) by ``route``: seconds, rank, evals."""
    t0 = time.perf_counter()
    source = JacobianSource.from_model(model, Inputs(n, shape, chunk), route=route)
    g = gram_from_source(source, side="auto")
    t_gram = time.perf_counter() - t0
    e = esd_from_gram(g, scale="n", jac_error2=g.class_sum_residual2)
    seconds = time.perf_counter() - t0
    return {"route": source.route, "seconds": seconds, "seconds_gram": t_gram,
            "seconds_eig": seconds - t_gram, "dim": int(g.matrix.shape[0]), "rank": e.rank,
            "lambda_max": float(e.eigenvalues[0]), "eigenvalues": e.eigenvalues, "n": g.n}


def torch_func_recipe(
    model: torch.nn.Module, n: int, shape: tuple[int, ...], *, chunk: int = 5_000,
    batch: int = 500,
) -> dict[str, Any]:
    """The recipe a user would write: ``vmap(jacrev)`` per batch, ``G += J^T J`` in float64,
    ``torch.linalg.eigvalsh(G) / n``."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def g(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(functional_call(model, params, (x[None],))[0], dim=0)

    jac = vmap(jacrev(g))
    t0 = time.perf_counter()
    kd = 10 * int(np.prod(shape))
    gram = torch.zeros(kd, kd, dtype=torch.float64)
    for x, _ in Inputs(n, shape, chunk):
        for s in range(0, x.shape[0], batch):
            rows = jac(x[s : s + batch]).reshape(-1, kd).to(torch.float64)
            gram.addmm_(rows.T, rows)
    ev = torch.linalg.eigvalsh(gram).flip(0).numpy() / n
    seconds = time.perf_counter() - t0
    return {"route": "torch.func", "seconds": seconds, "dim": kd,
            "lambda_max": float(ev[0]), "eigenvalues": np.clip(ev, 0, None), "n": n}


STAGES = {
    "direct": lambda n, c: exact_esd(make_model(MNIST), n, MNIST, route="direct", chunk=c),
    "factored": lambda n, c: exact_esd(make_model(MNIST), n, MNIST, route="factored", chunk=c),
    "torch_func": lambda n, c: torch_func_recipe(make_model(MNIST), n, MNIST, chunk=c),
    "cifar": lambda n, c: exact_esd(make_model(CIFAR), n, CIFAR, route="factored", chunk=c),
}


def gram_update(n: int, dim: int = 4_608) -> dict[str, float]:
    """Seconds to fold ``n`` float32 rows of width ``dim`` into a float64 dual Gram: a full
    ``addmm_`` per chunk vs the one-triangle update; max |difference| / max |entry|."""
    full = torch.zeros(dim, dim, dtype=torch.float64)
    tri = _DualAccumulator(dim, torch.float32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    t_full = t_tri = 0.0
    for start in range(0, n, DUAL_CHUNK_ROWS):
        rows = torch.randn(min(DUAL_CHUNK_ROWS, n - start), dim, generator=gen)
        t0 = time.perf_counter()
        c = rows.to(torch.float64)
        full.addmm_(c.T, c)
        t1 = time.perf_counter()
        tri.add(rows)
        tri.flush()
        t2 = time.perf_counter()
        t_full, t_tri = t_full + (t1 - t0), t_tri + (t2 - t1)
    t0 = time.perf_counter()
    mat = tri.result()
    t_tri += time.perf_counter() - t0
    ref = full.numpy()
    err = float(np.abs(mat - ref).max() / np.abs(ref).max())
    return {"addmm": t_full, "triangular": t_tri, "rel_diff": err}


def run_stage(name: str, n: int, out: Path) -> None:
    """One stage in this process: eigenvalues to ``out.npy``, the rest to ``out.json``."""
    res = STAGES[name](n, 5_000)
    np.save(f"{out}.npy", res.pop("eigenvalues"))
    res["peak_rss_gib"] = peak_rss_gib()
    Path(f"{out}.json").write_text(json.dumps(res))


def _stage(name: str, n: int, work: Path) -> tuple[dict[str, Any], np.ndarray]:
    out = work / name
    cmd = [sys.executable, __file__, "--stage", name, "--n", str(n), "--out", str(out)]
    subprocess.run(cmd, check=True)
    res = json.loads(Path(f"{out}.json").read_text())
    line = (f"{name:11s} n={res['n']} route={res['route']} dim={res['dim']} "
            f"seconds={res['seconds']:.1f} peak_rss_gib={res['peak_rss_gib']:.2f} "
            f"lambda_max={res['lambda_max']:.6g}")
    if "rank" in res:
        line += (f" rank={res['rank']} (Gram {res['seconds_gram']:.1f} s, eigenvalues "
                 f"{res['seconds_eig']:.1f} s)")
    print(line, flush=True)
    return res, np.load(f"{out}.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 3,000 / 2,500 smoke run")
    parser.add_argument("--cifar", action="store_true",
                        help="the CIFAR-sized SLQ estimate of a CNN (esd_scale_cifar.py)")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.cifar:
        sys.argv = [str(Path(__file__).with_name("esd_scale_cifar.py")), *rest]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    if args.stage:
        run_stage(args.stage, args.n, Path(args.out))
        return
    n_mnist, n_cifar = (3_000, 2_500) if args.quick else (60_000, 50_000)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        direct, ev_d = _stage("direct", n_mnist, work)
        fac, ev_f = _stage("factored", n_mnist, work)
        user, ev_u = _stage("torch_func", n_mnist, work)
        cifar, _ = _stage("cifar", n_cifar, work)
    upd = gram_update(n_mnist)
    gram_speedup = upd["addmm"] / upd["triangular"]
    print(f"gram_update n={n_mnist} dim=4608 addmm={upd['addmm']:.1f} s "
          f"triangular={upd['triangular']:.1f} s max|diff|/max={upd['rel_diff']:.1e}", flush=True)
    m = min(len(ev_d), len(ev_f))
    diff = float(np.max(np.abs(ev_d[:m] - ev_f[:m])) / ev_d[0])
    diff_u = float(np.max(np.abs(ev_u[:m] - ev_f[:m])) / ev_d[0])
    speedup = direct["seconds"] / fac["seconds"]
    print(f"MNIST eigenvalues: factored vs direct max|diff|/lambda_max = {diff:.2e}, "
          f"vs torch.func {diff_u:.2e}; rank direct {direct['rank']}, factored {fac['rank']}")
    print(f"torch.func recipe / jacspec direct = {user['seconds'] / direct['seconds']:.2f}x, "
          f"torch.func recipe / jacspec factored = {user['seconds'] / fac['seconds']:.2f}x")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"n={cifar['n']} seconds={cifar['seconds']:.1f} peak_rss_gib={cifar['peak_rss_gib']:.2f} "
          f"route={cifar['route']} speedup_vs_direct={speedup:.2f} "
          f"gram_speedup_vs_addmm={gram_speedup:.2f}")


if __name__ == "__main__":
    main()
