"""Past exact reach: ResNet-20 at n = 50,000 by SLQ, validated against the exact spectrum.

The network and inputs of ``benchmarks/esd_resnet.py`` (CIFAR ResNet-20 at initialisation,
eval-mode BatchNorm, seed 0; standard-normal 3x32x32 inputs, the first 10,000 of the 50,000
are the same), softmax outputs, float32 Jacobians. Each stage in a subprocess (peak RSS):

1. ``exact``: the exact ESD of M/n at n = 10,000 (primal Gram, float64 eigenvalues);
2. ``slq10k``: ``jacspec.estimate_esd(method="slq")`` on the same 10,000 examples (𝒥 held
   in memory, 80 Lanczos steps x 10 Rademacher vectors, block Lanczos for the top 10
   eigenvalues, exact trace): the estimator's own error on a matrix whose spectrum is known;
3. ``slq50k``: the same estimate at n = 50,000 (dual operator, (k-1)d = 27,648 <= n).

Compared: the Kolmogorov-Smirnov distance between the estimate's CDF and the exact
eigenvalues' CDF above 1e-6 lambda_max, each renormalised (:func:`conditional_ks`; the
mass below is printed apart: at n = 50,000 the ESD of M/n has n - (k-1)d = 22,352 exact
zeros, 0.447 of its mass, which the rank-10,000 spectrum at n = 10,000 has not),
lambda_max's relative difference with the Ritz residual bound, and the trace.

    python benchmarks/slq_resnet.py             # about 10 minutes on 2 cores
    python benchmarks/slq_resnet.py --n 20000   # a smaller SLQ stage
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from esd_resnet import Inputs, peak_rss_gib, resnet  # noqa: E402

N_EXACT = 10_000


def stage_exact(n: int, out: Path) -> dict[str, Any]:
    import jacspec

    t = time.perf_counter()
    e = jacspec.esd(resnet(20), Inputs(N_EXACT))
    np.save(out.with_suffix(".npy"), e.eigenvalues)
    return {"n": e.n, "seconds": time.perf_counter() - t, "lambda_max": float(e.eigenvalues[0]),
            "trace": float(e.eigenvalues.sum()), "rank": e.rank}


def _slq(n: int, out: Path) -> dict[str, Any]:
    import jacspec

    t = time.perf_counter()
    est = jacspec.estimate_esd(resnet(20), Inputs(n), method="slq", storage="memory",
                               num_steps=80, num_vectors=10, top_k=10, top_steps=60, seed=0)
    np.savez(out.with_suffix(".npz"), nodes=est.nodes, weights=est.weights)
    return {"n": est.n, "seconds": time.perf_counter() - t, "side": est.side,
            "lambda_max": float(est.top_eigenvalues[0]),
            "lambda_max_residual": float(est.top_residuals[0]), "trace": float(est.trace),
            "trace_estimate": float(est.trace_estimate),
            "trace_stderr": float(est.trace_stderr), "zero_mass": float(est.zero_mass)}


STAGES = {"exact": stage_exact, "slq10k": lambda n, out: _slq(N_EXACT, out),
          "slq50k": _slq}


def conditional_ks(exact: np.ndarray, nodes: np.ndarray, weights: np.ndarray,
                   rel: float = 1e-6) -> float:
    """KS distance between the laws of the eigenvalues above ``rel * lambda_max`` (exact's),
    each renormalised: at n = 50,000 > (k-1)d the ESD of M/n holds n - (k-1)d exact zeros
    that the n = 10,000 spectrum (rank n) has not, so the zero atom is compared apart."""
    from jacspec.spectra.slq import cdf_distance

    cut = rel * float(exact.max())
    keep = nodes > cut
    return cdf_distance(exact[exact > cut], nodes[keep], None, weights[keep])


def _stage(name: str, n: int, work: Path) -> dict[str, Any]:
    out = work / name
    subprocess.run([sys.executable, __file__, "--stage", name, "--n", str(n), "--out",
                    str(out)], check=True)
    res = json.loads(out.with_suffix(".json").read_text())
    print(f"{name}: " + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in res.items()), flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="examples of the SLQ stage")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        out = Path(args.out)
        res = STAGES[args.stage](args.n, out)
        res["peak_rss_gib"] = peak_rss_gib()
        out.with_suffix(".json").write_text(json.dumps(res))
        return
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exact = _stage("exact", args.n, work)
        ev = np.load(work / "exact.npy")
        lines = []
        for name in ("slq10k", "slq50k"):
            res = _stage(name, args.n, work)
            q = np.load(work / f"{name}.npz")
            ks = conditional_ks(ev, q["nodes"], q["weights"])
            err = abs(res["lambda_max"] - exact["lambda_max"]) / exact["lambda_max"]
            zero = float(q["weights"][q["nodes"] <= 1e-6 * exact["lambda_max"]].sum())
            lines.append(
                f"{name}: n={res['n']} seconds={res['seconds']:.1f} "
                f"peak_rss_gib={res['peak_rss_gib']:.2f} side={res['side']} "
                f"ks_vs_exact_10000={ks:.4f} (above 1e-6 lambda_max; mass below: {zero:.3f}) "
                f"lambda_max_rel_diff={err:.2e} "
                f"(Ritz residual {res['lambda_max_residual'] / exact['lambda_max']:.1e} of "
                f"lambda_max) trace_rel_diff="
                f"{abs(res['trace'] - exact['trace']) / exact['trace']:.2e}")
            print(lines[-1], flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(lines[-1])


if __name__ == "__main__":
    main()
