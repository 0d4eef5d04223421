"""The result of :func:`jacspec.analyze`: its table, ESDs, fits, nulls and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from jacspec._util.json import jsonable
from jacspec._util.names import MAIN
from jacspec.analysis.columns import SKETCH_COLUMNS, SKETCHED
from jacspec.heavytail.powerlaw import PowerLawFit
from jacspec.heavytail.randomized import RandomizedNull
from jacspec.spectra.exact import ESD

__all__ = ["Analysis"]


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze`: ``table`` (one row per matrix) and what produced it.

    ``esds``: exact ESDs by row; ``estimates``: SLQ estimates by row (``estimate`` is the
    input->output one, None when exact); skipped rows are in neither.
    """

    table: pd.DataFrame
    esds: dict[str, ESD]
    fits: dict[str, PowerLawFit | None]
    nulls: dict[str, RandomizedNull | None]
    settings: dict[str, Any] = field(default_factory=dict)
    estimate: Any = None
    estimates: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline numbers of the input-output matrix plus layer means of alpha (JSON-able);
        ``method`` says how the row was computed, and a sketched row adds ``sketch_r`` and its
        error bars (``lambda_max_se``, ``lambda_max_low``, ``lambda_max_high``, ``trace``,
        ``trace_se``, ``trace_low``, ``trace_high``). At an input module, ``input_module``
        names it (the row keeps its name ``input->output``: ``input`` is that module's
        output)."""
        main = self.table.loc[MAIN].to_dict()
        out = {
            k: main.get(k)
            for k in (
                "method",
                "alpha",
                "alpha_weighted",
                "log_norm",
                "lambda_max",
                "stable_rank",
                "entropy",
                "rand_distance",
                "warning",
            )
        }
        if main.get("method") == SKETCHED:
            out.update({k: main.get(k) for k in ("trace", *SKETCH_COLUMNS)})
        if self.settings.get("input_module") is not None:  # the rows' "input" is h
            out["input_module"] = self.settings["input_module"]
        if len(self.table) > 1:
            layers = self.table.drop(index=MAIN)
            out["layers_alpha_mean"] = float(layers["alpha"].mean())
            out["layers_log_norm_mean"] = float(layers["log_norm"].mean())
        return jsonable(out)

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "eigenvalues", "metrics", ...}``: eigenvalues and metrics are the
        input-output matrix's; ``"layers"`` holds every row when layers were analysed."""
        main_esd = self.esds.get(MAIN)
        out: dict[str, Any] = {
            "settings": {**self.settings, **(main_esd.describe() if main_esd else {})},
            "eigenvalues": main_esd.eigenvalues.tolist() if main_esd is not None else [],
            "metrics": self.table.loc[MAIN].to_dict(),
            "summary": self.summary(),
        }
        if self.estimate is not None:
            out["estimate"] = self.estimate.summary()
        if len(self.table) > 1:
            out["layers"] = [
                {"name": name, **row.to_dict()} for name, row in self.table.iterrows()
            ]
        return jsonable(out)

    def to_frame(self) -> pd.DataFrame:
        """The table: one row per matrix (index: its name), WeightWatcher-named columns."""
        return self.table

    def plot(self, kind: str | None = None, *, matrix: str = MAIN) -> Any:
        """One figure of ``matrix``'s ESD: ``kind`` "loglog" (with the power-law fit),
        "linear" (with the MP bulk), "randomized" (against the randomized null) or "slq"
        (an estimate's CDF and density); None: the first of these the analysis has.
        All figures at once: :func:`jacspec.report.analysis.analysis_figures`."""
        from jacspec.report.analysis import analysis_figures

        figs = analysis_figures(self, matrix)
        kinds = {name.removeprefix("esd_").removesuffix(".png"): name for name in figs}
        if kind is None:
            kind = next(iter(kinds))
        if kind not in kinds:
            raise ValueError(f"kind={kind!r} is not available for {matrix!r}; expected one of "
                             f"{', '.join(kinds)}")
        return figs[kinds[kind]]
