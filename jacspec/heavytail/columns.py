"""WeightWatcher-named heavy-tail metrics of an eigenvalue array (pure numpy).

Columns (WeightWatcher's names): ``alpha``, ``xmin``, ``xmax``, ``D``, ``sigma``,
``num_pl_spikes``, ``warning`` from the power-law fit
(:func:`jacspec.heavytail.powerlaw.fit_powerlaw`),
``lambda_max``, ``alpha_weighted = alpha * log10(lambda_max)``, ``log_alpha_norm =
log10(sum_i lambda_i^alpha)`` (over the positive eigenvalues, computed with log-sum-exp);
with an MP fit (``Q`` given or ``mp=``): ``mp_softrank = lambda_plus / lambda_max``,
``num_spikes``, ``lambda_plus``, ``mp_sigma2``; with a randomized null (``null=``), in
WeightWatcher's sense: ``rand_distance`` (Jensen-Shannon distance of the sorted, normalised
eigenvalue vectors), ``rand_lambda_max``, ``num_traps`` (MP spikes of the randomized ESD);
and jacspec's own ``num_above_rand_max`` (real eigenvalues above rand_lambda_max) and
``rand_hist_jsd`` (histogram JSD, :func:`jacspec.heavytail.randomized.esd_distance`).

Eigenvalues at or below the rank tolerance (:func:`jacspec.spectra.eigen.rank_tolerance`,
``tol=``) are zeros for every fit. ``warning`` carries jacspec's own warnings only, joined
by "; " (WeightWatcher's alpha < 2 "over-trained" / alpha > 6 "under-trained" labels are
calibrated on weight matrices, not on Jacobian ESDs, and are not given):
``"failed"`` (no power-law fit, ``errors="nan"``) and, when an MP fit was asked for
(``Q``) and none can be made, ``"no MP bulk above the rank tolerance (R of M eigenvalues
above tol)"`` (:data:`jacspec.heavytail.mp.NO_BULK`; fewer than 3 of the min(rows, cols)
eigenvalues, or at most half of them, above tol); the MP columns are NaN then.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jacspec.heavytail.mp import NO_BULK, MPFit, fit_mp
from jacspec.heavytail.powerlaw import PowerLawFit, fit_powerlaw
from jacspec.heavytail.randomized import RandomizedNull

__all__ = ["HEAVY_TAIL_COLUMNS", "MP_COLUMNS", "NULL_COLUMNS", "heavy_tail_metrics",
           "join_warnings", "no_bulk_warning"]

#: Columns always present in :func:`heavy_tail_metrics`' result, in order.
HEAVY_TAIL_COLUMNS = (
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "xmin",
    "xmax",
    "D",
    "sigma",
    "num_pl_spikes",
    "warning",
    "lambda_max",
)
#: Columns added by a Marchenko-Pastur fit (``Q`` given or ``mp=``), in order.
MP_COLUMNS = ("mp_softrank", "num_spikes", "lambda_plus", "mp_sigma2")
#: Columns added by a randomized null (``null=``), in order.
NULL_COLUMNS = ("rand_distance", "rand_lambda_max", "num_traps", "num_above_rand_max",
                "rand_hist_jsd")


def join_warnings(*parts: str) -> str:
    """The non-empty warnings, joined by "; " ("" when none)."""
    return "; ".join(p for p in parts if p)


def no_bulk_warning(eigenvalues: np.ndarray, Q: float, rows: int | None = None) -> str:
    """``"no MP bulk above the rank tolerance (R of M eigenvalues above tol)"``: R positive
    among the M = min(rows, cols) largest of ``eigenvalues`` (already zeroed below tol)."""
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    m = ev.size
    if rows is not None:
        m = min(m, int(rows), max(1, int(round(int(rows) / float(Q)))))
    above = int(np.sum(np.sort(ev)[::-1][:m] > 0))
    return f"{NO_BULK} ({above} of {m} eigenvalues above tol)"


def _log10_sum_pow(ev: np.ndarray, alpha: float) -> float:
    """log10 sum_i ev_i^alpha for positive ev, without overflow."""
    from scipy.special import logsumexp

    return float(logsumexp(alpha * np.log(ev)) / math.log(10.0))


def heavy_tail_metrics(
    eigenvalues: Any,
    *,
    fit: PowerLawFit | None = None,
    mp: MPFit | None = None,
    null: RandomizedNull | None = None,
    Q: float | None = None,
    rows: int | None = None,
    tol: float | None = None,
    errors: str = "raise",
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Heavy-tail metrics of an ESD as a flat, JSON-able dict with WeightWatcher's names.

    eigenvalues: 1-D array (numpy, list or torch; exact zeros are left out of the fit and of
    log_alpha_norm). fit: a precomputed :class:`PowerLawFit` (else ``fit_powerlaw(eigenvalues,
    **fit_kwargs)``). mp: a precomputed :class:`MPFit`, or give ``Q`` (= rows/cols of the
    matrix whose Gram has these eigenvalues; n/(k d) for the data Jacobian) and optionally
    ``rows`` to fit one. null: a :class:`RandomizedNull` of the same matrix. tol: the rank
    tolerance (the ESD's ``tol``; None: :func:`jacspec.spectra.eigen.rank_tolerance` of these
    eigenvalues, float64 rule): eigenvalues <= tol are zeros for the power law,
    log_alpha_norm and the MP fit. errors: "raise" (default) re-raises a failed power-law
    fit (too few eigenvalues) or MP fit (no bulk above tol); "nan" returns NaN columns and
    the warnings of the module docstring instead.
    """
    from jacspec._util.validation import check_choice
    from jacspec.spectra.eigen import zero_below_tolerance

    check_choice("errors", errors, ("raise", "nan"))
    ev = _eigenvalue_array(eigenvalues)
    lam_max = float(ev.max())
    ev, tol = zero_below_tolerance(ev, tol)
    if fit is None:
        fit = _try_powerlaw(ev, errors, fit_kwargs)
    elif fit_kwargs:
        raise TypeError(f"pass either fit= or fit options, not both: {sorted(fit_kwargs)}")
    out = _powerlaw_columns(ev, lam_max, fit)
    if mp is None and Q is not None:
        try:
            mp = fit_mp(ev, Q, rows=rows, tol=tol)
        except ValueError as exc:
            if errors == "raise" or not str(exc).startswith(NO_BULK):
                raise
            out.update(dict.fromkeys(MP_COLUMNS, float("nan")))
            out["warning"] = join_warnings(out["warning"], no_bulk_warning(ev, Q, rows))
    if mp is not None:
        out.update(
            mp_softrank=mp.mp_softrank,
            num_spikes=mp.num_spikes,
            lambda_plus=mp.lambda_plus,
            mp_sigma2=mp.sigma2,
        )
    if null is not None:
        out.update({name: getattr(null, name) for name in NULL_COLUMNS})
    return out


def _eigenvalue_array(eigenvalues: Any) -> np.ndarray:
    """Eigenvalues (numpy, list or torch) as a flat float64 array; ValueError when empty or
    with a NaN."""
    if hasattr(eigenvalues, "detach"):
        eigenvalues = eigenvalues.detach().cpu().double().numpy()
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if ev.size == 0:
        raise ValueError("eigenvalues is empty")
    if np.isnan(ev).any():
        raise ValueError("eigenvalues contain NaN")
    return ev


def _try_powerlaw(ev: np.ndarray, errors: str, fit_kwargs: dict[str, Any]) -> PowerLawFit | None:
    """``fit_powerlaw(ev, **fit_kwargs)``; None for a failed fit when ``errors="nan"``."""
    try:
        return fit_powerlaw(ev, **fit_kwargs)
    except ValueError:
        if errors == "raise":
            raise
        return None


def _powerlaw_columns(ev: np.ndarray, lam_max: float, fit: PowerLawFit | None) -> dict[str, Any]:
    """The power-law columns of ``fit`` (NaN and warning "failed" without one), and
    lambda_max: alpha_weighted = alpha log10 lambda_max, log_alpha_norm = log10 sum_i
    lambda_i^alpha over the positive eigenvalues."""
    out: dict[str, Any] = {}
    if fit is None:
        nan = float("nan")
        out.update(alpha=nan, alpha_weighted=nan, log_alpha_norm=nan, xmin=nan, xmax=nan,
                   D=nan, sigma=nan, num_pl_spikes=0, warning="failed")
    else:
        pos = ev[ev > 0]
        out.update(
            alpha=fit.alpha,
            alpha_weighted=fit.alpha * math.log10(lam_max) if lam_max > 0 else float("nan"),
            log_alpha_norm=_log10_sum_pow(pos, fit.alpha) if pos.size else float("nan"),
            xmin=fit.xmin,
            xmax=fit.xmax,
            D=fit.D,
            sigma=fit.sigma,
            num_pl_spikes=fit.num_pl_spikes,
            warning=fit.warning,
        )
        if fit.distribution == "truncated_power_law":
            out["lambda_"] = fit.lambda_
        if fit.fingers is not None:
            out["num_fingers"] = fit.num_fingers
            out["raw_alpha"] = fit.raw_alpha
    out["lambda_max"] = lam_max
    return out
