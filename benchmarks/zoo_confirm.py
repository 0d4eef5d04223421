"""Cost of study 2's pre-registered test (``jacspec.zoo.rank.confirm.confirmatory_test``) at the
size the pre-registration fixes: 2 families x 64 configurations (6 two-level factors) x 4
seeds = 512 networks, 14 shape metrics (two with a few NaN, so three network sets), 8
comparators, plus Z and the noise ceiling (24 rows), B = 2,000 draws, on a synthetic zoo
(the gap follows a configuration-level scale read by Z and the comparators, and a second
cause read by one shape metric only).

Last lines: ``networks=512 metrics=24 B=2000: S s`` (everything) and ``without CMI: S s``.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/zoo_confirm.py [B]
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np
import pandas as pd

from jacspec.zoo.rank.confirm import confirmatory_test


def synthetic_zoo(n_factors: int = 6, seeds: int = 4, n_null: int = 13, n_comp: int = 8,
                  seed: int = 1) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    fs = [f"f{i}" for i in range(n_factors)]
    rows = []
    for fam in ("mlp", "cnn"):
        for lv in itertools.product([0, 1], repeat=n_factors):
            c = rng.normal(size=2)
            rows += [{"model": fam, **dict(zip(fs, lv, strict=True)), "seed": 201 + s,
                      "_s": c[0], "_i": c[1]} for s in range(seeds)]
    d = pd.DataFrame(rows)
    n = len(d)
    scale, info = d["_s"] + 0.3 * rng.normal(size=n), d["_i"] + 0.3 * rng.normal(size=n)
    d["train_jacobian_norm"] = np.exp(scale)
    d["gap"] = np.round(0.05 + 0.02 * scale + 0.02 * info + 0.003 * rng.normal(size=n), 4)
    d["good"] = info + 0.2 * rng.normal(size=n)
    for k in range(n_null):
        d[f"null{k}"] = rng.normal(size=n)
    for k in range(n_comp):
        d[f"comp{k}"] = scale + 0.5 * rng.normal(size=n)
    for k in (0, 1):
        d.loc[rng.choice(n, 10, replace=False), f"null{k}"] = np.nan
    return d.drop(columns=["_s", "_i"]), fs


def main() -> None:
    B = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    d, fs = synthetic_zoo()
    shape = ["good"] + [f"null{k}" for k in range(13)]
    comp = [f"comp{k}" for k in range(8)]
    keys = [*fs, "model", "seed"]
    t = time.perf_counter()
    r = confirmatory_test(d, shape, comp, config_keys=keys, B=B)
    print(f"networks={len(d)} metrics={len(r.rows)} B={B}: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    confirmatory_test(d, shape, comp, config_keys=keys, B=B, cmi=False)
    print(f"without CMI: {time.perf_counter() - t:.1f} s")
    print(f"verdict: {r.verdict.answer}, best {r.verdict.best.get('metric')}")


if __name__ == "__main__":
    main()
