"""Output sketching against the exact ESD on a 100-class model (docs/results/sketching.md).

Model: MLP 64-256-100 (ReLU), trained briefly (200 full-batch Adam steps, lr 1e-3) on
n = 800 Gaussian inputs with uniformly random labels among 100 classes, float64
throughout, softmax outputs. For r in {4, 8, 16, 32, 64} shared projections (orthonormal and
Rademacher) and ``--seeds`` sketch seeds each: lambda_max, trace of M/n and the KS distance
of the sketched ESD to the exact one, the coverage of the 95% jackknife intervals
(:func:`jacspec.jacobian.sketch.sketch_estimate`) and the measured cost (time of the
sketched Jacobian pass against the exact one; backward cotangents r/k).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/sketch_accuracy.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jacspec.jacobian.sketch import sketch_estimate, sketch_source
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import esd_from_gram
from jacspec.spectra.gram import gram_from_source

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
RS = (4, 8, 16, 32, 64)
KINDS = ("orthonormal", "rademacher")
N, D, WIDTH, K = 800, 64, 256, 100


def make_model() -> tuple[nn.Module, torch.Tensor, float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, WIDTH), nn.ReLU(), nn.Linear(WIDTH, K)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).double().mean())
    return model.eval(), x, acc


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance sup_t |F_a(t) - F_b(t)|."""
    pts = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), pts, side="right") / a.size
    fb = np.searchsorted(np.sort(b), pts, side="right") / b.size
    return float(np.abs(fa - fb).max())


def timed_pass(source: JacobianSource) -> float:
    t0 = time.perf_counter()
    for _ in source:
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    model, x, acc = make_model()
    exact_src = JacobianSource.from_model(model, x, dtype=torch.float64).cached()
    t_exact = min(timed_pass(JacobianSource.from_model(model, x, dtype=torch.float64))
                  for _ in range(3))
    e = esd_from_gram(gram_from_source(exact_src))
    ev = e.eigenvalues
    lam, tr = float(ev[0]), float(ev.sum())
    deciles = np.quantile(ev, np.linspace(0.1, 0.9, 9))
    f_true = np.searchsorted(np.sort(ev), deciles, side="right") / ev.size
    rows, examples = [], {}
    for kind in KINDS:
        for r in RS:
            t_sk = min(timed_pass(sketch_source(model, x, r, dtype=torch.float64, kind=kind))
                       for _ in range(3))
            rec = {"lam": [], "lam_plain": [], "tr": [], "ks": [], "cov_lam": [], "cov_tr": [],
                   "cov_cdf": [], "cov_cdf_all": [], "lam_hw": [], "tr_hw": []}
            for seed in range(args.seeds):
                s = sketch_estimate(model, x, r, dtype=torch.float64, sketch_kind=kind,
                                    sketch_seed=seed)
                rec["lam"].append(s.lambda_max)
                rec["lam_plain"].append(s.settings["lambda_max_plain"])
                rec["tr"].append(s.trace)
                rec["ks"].append(ks(s.eigenvalues, ev))
                rec["cov_lam"].append(s.lambda_max_low <= lam <= s.lambda_max_high)
                rec["cov_tr"].append(s.trace_low <= tr <= s.trace_high)
                _, lo, hi = s.cdf_band(deciles)
                inside = (lo <= f_true) & (f_true <= hi)
                rec["cov_cdf"].append(float(inside.mean()))
                rec["cov_cdf_all"].append(bool(inside.all()))
                rec["lam_hw"].append((s.lambda_max_high - s.lambda_max_low) / 2 / lam)
                rec["tr_hw"].append((s.trace_high - s.trace_low) / 2 / tr)
                if seed == 0 and kind == "orthonormal":
                    examples[r] = s
            a = {key: np.asarray(v, dtype=np.float64) for key, v in rec.items()}
            rows.append({
                "kind": kind, "r": r, "backward_fraction": r / K, "time_ratio": t_sk / t_exact,
                "lam_relerr": float(np.mean(np.abs(a["lam"] - lam)) / lam),
                "lam_plain_bias": float((a["lam_plain"].mean() - lam) / lam),
                "lam_bias": float((a["lam"].mean() - lam) / lam),
                "tr_relerr": float(np.mean(np.abs(a["tr"] - tr)) / tr),
                "tr_bias": float((a["tr"].mean() - tr) / tr),
                "ks": float(a["ks"].mean()),
                "cov_lam": float(a["cov_lam"].mean()), "cov_tr": float(a["cov_tr"].mean()),
                "cov_cdf": float(a["cov_cdf"].mean()),
                "cov_cdf_all": float(a["cov_cdf_all"].mean()),
                "lam_hw": float(a["lam_hw"].mean()), "tr_hw": float(a["tr_hw"].mean()),
            })
            print(json.dumps(rows[-1]), flush=True)
    seconds = time.perf_counter() - t_start
    figure(ev, examples, rows)
    write_page(rows, lam, tr, acc, t_exact, args.seeds, seconds)
    print(f"seconds={seconds:.0f}")


def figure(ev: np.ndarray, examples: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for kind, style in zip(KINDS, ("o-", "s--"), strict=True):
        sub = [r for r in rows if r["kind"] == kind]
        ax.plot([r["r"] for r in sub], [r["lam_relerr"] for r in sub], style,
                label=f"lambda_max ({kind})")
        ax.plot([r["r"] for r in sub], [r["tr_relerr"] for r in sub], style, alpha=0.5,
                label=f"trace ({kind})")
        ax.plot([r["r"] for r in sub], [r["ks"] for r in sub], style, alpha=0.3,
                label=f"KS distance ({kind})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("projections r (k = 100)")
    ax.set_title("mean relative error / KS vs exact")
    ax.legend(fontsize=6)
    srt = np.sort(ev)
    for ax, r in zip(axes[1:], (16, 64), strict=True):
        s = examples[r]
        ax.step(srt, np.arange(1, srt.size + 1) / srt.size, where="post", color="k",
                label="exact ESD")
        ax.step(s.grid, s.cdf, where="post", color="C0", label=f"sketch r={r} (jackknife)")
        ax.fill_between(s.grid, s.cdf_low, s.cdf_high, step="post", alpha=0.3, color="C0",
                        label="95% pointwise band")
        ax.set_xlim(0, float(np.quantile(ev, 0.99)))
        ax.set_xlabel("eigenvalue of M/n")
        ax.set_title(f"ESD CDF, r = {r}, seed 0 (orthonormal)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "sketching.png", dpi=110)


def write_page(rows: list[dict], lam: float, tr: float, acc: float, t_exact: float,
               seeds: int, seconds: float) -> None:
    head = ("| kind | r | cotangents r/k | time ratio | lambda_max rel. err | "
            "plain lambda_max bias | trace rel. err | KS | coverage lambda_max | "
            "coverage trace | CDF coverage (deciles, mean / all 9) | half-width lambda_max "
            "/ trace |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['r']} | {r['backward_fraction']:.2f} | {r['time_ratio']:.2f} "
            f"| {r['lam_relerr']:.3f} | {r['lam_plain_bias']:+.3f} | {r['tr_relerr']:.3f} "
            f"| {r['ks']:.3f} | {r['cov_lam']:.2f} | {r['cov_tr']:.2f} "
            f"| {r['cov_cdf']:.2f} / {r['cov_cdf_all']:.2f} "
            f"| {r['lam_hw']:.3f} / {r['tr_hw']:.3f} |"
        )
    table = "\n".join(lines)
    text = PAGE.format(table=table, lam=lam, tr=tr, acc=acc, t_exact=t_exact, seeds=seeds,
                       seconds=seconds, n=N, d=D, k=K, width=WIDTH)
    (OUT / "sketching.md").write_text(text)


PAGE = """# Output sketching: accuracy, cost and error bars

Written by `experiments/sketch_accuracy.py` ({seconds:.0f} s on the shared 2-core machine,
one thread). Library: `jacspec.jacobian.sketch` (`sketch=r` on `JacobianOptions`,
`analyze(..., sketch=r)`, `jacspec analyze --sketch R`; `sketch_estimate` for error bars).

## Setup

- Model: MLP {d}-{width}-{k} (ReLU), trained briefly: 200 full-batch Adam steps (lr 1e-3) on
  n = {n} Gaussian inputs (d = {d}) with uniformly random labels among k = {k} classes
  (train accuracy {acc:.2f}); float64, softmax outputs.
- Exact: the ESD of M/n from all k = {k} rows per example (dual/primal Gram, float64):
  lambda_max = {lam:.6g}, trace = {tr:.6g}; exact Jacobian pass {t_exact:.2f} s.
- Sketch: r shared projections in the class-sum-zero basis (k' = k - 1 = 99 dimensions),
  sketched rows S_i = V J_i computed as r vector-Jacobian products (one forward pass, r
  batched cotangents); {seeds} sketch seeds per (kind, r). Error bars: 95% delete-one-group
  jackknife over B = min(r, 8) groups of projections, Student t with B - 1 degrees of
  freedom, widened by the size of the bias correction, variance times 1 - r/k' for
  orthonormal projections (sampling without replacement).

## Results

"lambda_max rel. err" and "trace rel. err" are the mean |estimate - exact| / exact of the
jackknife (bias-corrected) values over seeds; "plain lambda_max bias" is the mean relative
bias of the uncorrected sketch's largest eigenvalue (positive: lambda_max is convex in M).
KS: the mean Kolmogorov-Smirnov distance between the sketched ESD (plain sketch, padded
with its structural zeros to n eigenvalues) and the exact ESD. Coverage: the fraction of
seeds whose interval contains the exact value; for the CDF, the fraction of the exact
ESD's 9 deciles inside the pointwise band (mean) and the fraction of seeds with all 9
inside. Time ratio: the sketched Jacobian pass over the exact one (best of 3); cotangents
r/k: the backward work the sketch asks for.

{table}

![sketch accuracy](sketching.png)

## Reading

- The trace is linear in M, so its sketch is unbiased and its jackknife interval is the
  exact t interval of the group estimates: coverage is near or above 95% at every r.
- lambda_max is convex in M, so the plain sketch overestimates it (column "plain
  lambda_max bias"); the jackknife removes the first-order bias, and the interval is
  widened by the size of that correction.
- The ESD is the hard part: with r d < n (here r <= 12) the sketched M has rank at most
  r d, so a fraction 1 - r d / n of its eigenvalues are exact zeros that the true ESD does
  not have, and no unbiased correction of the CDF exists; the KS distance and the CDF band
  coverage show where the sketched ESD can be trusted. Use the sketch for lambda_max,
  trace and the upper part of the spectrum at small r, and r d >= n (better several times
  n) for the shape of the bulk.
- Cost: the sketched pass asks for r of the k cotangents; the time ratio measured on this
  machine includes the shared forward pass.
- Rademacher projections beat orthonormal ones here at every r < k' (about 3x smaller
  errors at r = 4): a quadratic form's Rademacher estimate has no diagonal term in its
  variance, and the per-class Gram of a many-class model is diagonally dominant. Rademacher
  is the default (`sketch_kind`); orthonormal rows are exact at r = k' = 99.
- Time ratios are best-of-3 wall times on a shared machine (noisy at the 10% level).
- Per-example (independent) projections are not offered: they estimate every
  off-diagonal M_ij by zero in expectation (E[U_i] = 0), see `jacspec.jacobian.sketch`.
"""


if __name__ == "__main__":
    main()
