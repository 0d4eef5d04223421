"""The columns of :func:`jacspec.analyze`'s table, declared once (no torch import).

Each group is declared where its row part is built: the spectral metrics in
:data:`jacspec.spectra.metrics.METRIC_COLUMNS`, the power law, Marchenko-Pastur and
randomized-null columns in :mod:`jacspec.heavytail.columns`; the sketch's columns here.
:data:`ROW_METRICS` joins them in the table's order: every row of the table has each of them
(NaN where it was not computed) and the :class:`~jacspec.track.tracker.Tracker` records any
of them. :data:`ROW_INFO` are the columns that describe a row rather than measure it.
"""

from __future__ import annotations

from jacspec.heavytail.columns import HEAVY_TAIL_COLUMNS, MP_COLUMNS, NULL_COLUMNS
from jacspec.spectra.metrics import METRIC_COLUMNS

__all__ = ["MP_COLUMNS", "NULL_COLUMNS", "POWERLAW_COLUMNS", "ROW_INFO", "ROW_METRICS",
           "SKETCHED", "SKETCH_COLUMNS"]

#: The power-law columns of a row (:data:`jacspec.heavytail.columns.HEAVY_TAIL_COLUMNS` less
#: ``warning`` and ``lambda_max``, which are elsewhere in the row).
POWERLAW_COLUMNS = tuple(c for c in HEAVY_TAIL_COLUMNS if c not in ("warning", "lambda_max"))
#: The sketch's columns: ``sketch_r`` (0: exact) and the error bars of lambda_max and the
#: trace (the jackknife of :func:`jacspec.jacobian.sketch.sketch_error_bars` for a sketched
#: row; zero width for an exact row; NaN for an estimated or skipped row).
SKETCH_COLUMNS = ("sketch_r", "lambda_max_se", "lambda_max_low", "lambda_max_high",
                  "trace_se", "trace_low", "trace_high")
#: The numeric columns every row of the table has, by group: spectral, power law,
#: Marchenko-Pastur, randomized null, the rank tolerance, the sketch.
ROW_METRICS = (METRIC_COLUMNS + POWERLAW_COLUMNS + MP_COLUMNS + NULL_COLUMNS + ("tol",)
               + SKETCH_COLUMNS)
#: What every row says about itself (not metrics): how it was computed and its shape.
ROW_INFO = ("warning", "n", "k", "d", "side", "dtype", "unresolved", "method")
#: ``method`` of a row computed from sketched output projections (exact rows: ``"exact"``,
#: estimated: ``"slq"``, not computed: ``"skipped"``).
SKETCHED = "sketched"
