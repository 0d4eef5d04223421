"""Exact Jacobian ESD at MNIST scale: MLP 784-512-512-10 on 60,000 inputs of dimension 784.

The dual Gram (class-sum-zero basis, 7056 x 7056 float64) is accumulated batch by batch
without holding the data Jacobian (60,000 x 7,840), then diagonalised exactly. Inputs are
synthetic (standard normal), the network is jacspec's MLP at its default initialisation.
Goal: under 5 minutes on 2 cores with peak RSS under 3 GiB.

Last line: ``n=60000 seconds=<t> peak_rss_gib=<m>``.

    python benchmarks/esd_scale.py [--n N]        # exact, MNIST-sized
    python benchmarks/esd_scale.py --cifar        # estimate, CIFAR-sized (esd_scale_cifar.py)
"""

from __future__ import annotations

import argparse
import resource
import runpy
import sys
import time
from pathlib import Path

import torch

from jacspec.models.builders import mlp
from jacspec.spectra.exact import esd_from_gram
from jacspec.spectra.gram import gram
from jacspec.spectra.metrics import spectral_metrics


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--cifar", action="store_true", help="run the CIFAR-sized estimate")
    args, rest = parser.parse_known_args()
    if args.cifar:
        sys.argv = [str(Path(__file__).with_name("esd_scale_cifar.py")), *rest]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    torch.manual_seed(0)
    model = mlp((784,), 10, width=512, depth=2, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    chunk = 5_000

    def batches():  # synthetic inputs, generated on the fly (never all held at once)
        for start in range(0, args.n, chunk):
            yield torch.randn(min(chunk, args.n - start), 784, generator=gen), None

    t0 = time.perf_counter()
    g = gram(model, batches(), side="dual", progress=False)
    t_gram = time.perf_counter() - t0
    result = esd_from_gram(g, scale="n")
    seconds = time.perf_counter() - t0
    m = spectral_metrics(result.eigenvalues, rank=result.rank)
    print(f"torch threads {torch.get_num_threads()}")
    print(f"dual Gram {g.matrix.shape[0]}x{g.matrix.shape[1]} (deflated={g.deflated}) "
          f"in {t_gram:.1f} s; eigenvalues in {seconds - t_gram:.1f} s")
    print(f"num_evals={m['num_evals']} rank={m['rank']} lambda_max={m['lambda_max']:.4g} "
          f"stable_rank={m['stable_rank']:.3f} entropy={m['entropy']:.3f}")
    print(f"n={g.n} seconds={seconds:.1f} peak_rss_gib={peak_rss_gib():.2f}")


if __name__ == "__main__":
    main()
