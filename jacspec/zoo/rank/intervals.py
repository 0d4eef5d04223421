"""Bootstrap confidence intervals of the zoo scores (:mod:`jacspec.zoo.rank.score`).

Each score is resampled at the level its definition averages over, ``reps`` times with one
generator (``seed``), and the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the draws (percentile bootstrap):

- ``kendall_tau`` (Jiang et al.'s tau over networks): configurations drawn with replacement,
  each with all its seed replicates (a cluster bootstrap: replicates are not independent);
- ``psi``: for each factor, its groups (models equal except that factor) drawn with
  replacement; ``Psi = mean_i mean(group taus)``;
- ``cmi`` (PGDL's): one replicate drawn for every configuration, so every draw is a PGDL
  task (a complete grid with one model per configuration); the interval is over the seeds'
  randomness, the grid being fixed;
- ``robust_sign_error``: the counted environments drawn with replacement; the supremum over
  the draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from jacspec._util.random import numpy_generator
from jacspec.zoo.rank.grid import REPLICATE_KEYS, group_codes, is_complete_grid
from jacspec.zoo.rank.pgdl import pgdl_cmi_codes
from jacspec.zoo.rank.stats import environment_errors, gap_noise, group_taus, kendall_tau_a

__all__ = ["SCORES", "score_intervals"]

#: The scores an interval is drawn for, in the order of :func:`score_intervals`'s output.
SCORES = ("kendall_tau", "psi", "cmi", "robust_sign_error")


def _quantiles(draws: Sequence[float], level: float) -> tuple[float, float]:
    d = np.asarray([v for v in draws if np.isfinite(v)], dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def score_intervals(df: pd.DataFrame, metric: str, factors: Sequence[str], *,
                    gap: str = "gap", noise: float | None = None, reps: int = 1000,
                    seed: int = 0, level: float = 0.95,
                    replicates: Sequence[str] = REPLICATE_KEYS
                    ) -> dict[str, tuple[float, float]]:
    """``{score: (lo, hi)}`` for every score in :data:`SCORES` of ``metric`` against ``gap``
    over the models of ``df`` (rows with a non-finite metric or gap dropped first, as the
    scores do); NaN bounds where a score is undefined (e.g. CMI off a complete grid)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be a positive number of resamples, got {reps}")
    factors = [f for f in factors if f in df]
    full = df.reset_index(drop=True)
    d = full[np.isfinite(full[metric].to_numpy(float)) & np.isfinite(full[gap].to_numpy(float))]
    d = d.reset_index(drop=True)
    rng = numpy_generator(seed)
    out: dict[str, tuple[float, float]] = {}

    # tau: a cluster bootstrap over configurations
    conf = group_codes(d, factors)
    members = [np.flatnonzero(conf == c) for c in range(int(conf.max()) + 1)] if len(d) else []
    mu, g = d[metric].to_numpy(float), d[gap].to_numpy(float)
    draws = []
    for _ in range(reps):
        pick = rng.integers(0, len(members), len(members)) if members else []
        rows = np.concatenate([members[i] for i in pick]) if len(pick) else np.zeros(0, int)
        draws.append(kendall_tau_a(mu[rows], g[rows]))
    out["kendall_tau"] = _quantiles(draws, level)

    # Psi: groups resampled within each factor
    taus = {f: t for f, t in group_taus(d, metric, factors, gap=gap,
                                        replicates=replicates).items() if t.size}
    draws = []
    for _ in range(reps):
        per = [float(t[rng.integers(0, t.size, t.size)].mean()) for t in taus.values()]
        draws.append(float(np.mean(per)) if per else float("nan"))
    out["psi"] = _quantiles(draws, level)

    # CMI: one replicate per configuration, on a complete grid of every model
    draws = []
    if len(d) == len(full) and len(d) and is_complete_grid(d, factors):
        codes = {f: group_codes(d, [f]) for f in factors}
        for _ in range(reps):  # every draw is a complete grid, one model per configuration
            rows = np.array([m[rng.integers(0, m.size)] for m in members])
            draws.append(pgdl_cmi_codes(mu[rows], g[rows],
                                        {f: c[rows] for f, c in codes.items()})[0])
    out["cmi"] = _quantiles(draws, level)

    # robust sign error: counted environments resampled, the supremum of each draw
    if noise is None:
        noise = gap_noise(d, factors, gap=gap, replicates=replicates)
    envs = np.concatenate([e for e in environment_errors(
        d, metric, factors, gap=gap, noise=noise, replicates=replicates).values()] or
        [np.zeros(0)])
    draws = [float(envs[rng.integers(0, envs.size, envs.size)].max()) for _ in range(reps)] \
        if envs.size else []
    out["robust_sign_error"] = _quantiles(draws, level)
    return {k: out[k] for k in SCORES}

