"""CIFAR-size ESD estimate: small CNN, n=50,000 synthetic 3x32x32 inputs, beyond exact reach.

Run directly or through ``benchmarks/esd_scale.py --cifar`` (which calls :func:`main`).

    python benchmarks/esd_scale_cifar.py            # n=50,000 (about 10-20 minutes, 2 cores)
    python benchmarks/esd_scale_cifar.py --quick    # n=2,000 smoke run

What it does and why: 𝒥 is n x kd = 50,000 x 30,720 (k=10 classes, d=3,072 inputs). Neither
Gram side fits an exact eigensolver in reasonable time (dual 30,720^2, primal 50,000^2).
Computing 𝒥 costs k backward passes per batch, several minutes for one pass over the data,
so recomputing it on every Lanczos step (streaming) is out. 𝒥 itself is 50,000 x 30,720
float32 = 6.1 GB: too much to keep resident under an 8 GiB budget with headroom, but fine
on disk. So: one Jacobian pass writes 𝒥 to an ``.npy`` file (plain writes), then every
operator pass reads it back in 1,024-row blocks (plain reads, so only one block is resident;
the OS page cache serves repeats) and applies the *dual* Gram 𝒥^T𝒥/n (30,720 x 30,720,
the smaller side) to a block of vectors: one pass serves all SLQ start vectors at once.
SLQ deflates the d-dimensional class-constant null space of softmax Jacobians (exact atom
1/k at 0), block Lanczos gives the top eigenvalues and one more pass the exact trace.

Last line: ``n=<n> seconds=<t> peak_rss_gib=<m> method=<name>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jacspec.models.builders import small_cnn  # noqa: E402
from jacspec.spectra.estimate import estimate_esd  # noqa: E402


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="number of synthetic inputs")
    p.add_argument("--quick", action="store_true", help="n=2,000 smoke run")
    p.add_argument("--num-steps", type=int, default=60, help="Lanczos steps per start vector")
    p.add_argument("--num-vectors", type=int, default=10, help="SLQ start vectors")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--top-steps", type=int, default=0,
                   help="0: top-k from the SLQ Krylov space; >0: separate block Lanczos passes")
    p.add_argument("--batch-size", type=int, default=None, help="Jacobian batch size")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=str, default=None, help="folder for the 𝒥 file")
    p.add_argument("--json", type=str, default=None, help="write the summary as JSON here")
    p.add_argument("--progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    n = 2_000 if args.quick else args.n
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n, 3, 32, 32, generator=gen)
    model = small_cnn((3, 32, 32), 10, seed=args.seed).eval()
    est = estimate_esd(
        model,
        x,
        method="slq",
        side="dual",
        storage="file",
        workdir=args.workdir or tempfile.gettempdir(),
        num_steps=args.num_steps,
        num_vectors=args.num_vectors,
        top_k=args.top_k,
        top_steps=args.top_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=args.progress,
    )
    seconds = time.perf_counter() - t0
    rss = peak_rss_gib()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    summary = est.summary() | {"seconds_total": seconds, "peak_rss_gib": rss, "cpu_seconds": cpu,
                               "top_eigenvalues": est.top_eigenvalues.tolist(),
                               "top_residuals": est.top_residuals.tolist(),
                               "torch_threads": torch.get_num_threads()}
    print(f"cpu_seconds (user+sys): {cpu:.1f}")
    for key in ("seconds_store", "seconds_estimate", "operator_passes", "trace", "trace_estimate",
                "trace_stderr", "lambda_max", "zero_mass"):
        val = summary.get(key, summary["params"].get(key))
        print(f"{key}: {val}")
    print("top eigenvalues:", np.array2string(est.top_eigenvalues, precision=5))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    method = f"slq-{est.side}-{est.storage}"
    print(f"n={n} seconds={seconds:.1f} peak_rss_gib={rss:.2f} method={method}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
