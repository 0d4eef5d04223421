"""One self-contained HTML page for any jacspec result: :func:`write_report`.

The page holds, per result, its settings, its tables, its figures and its warnings, plus
the versions of jacspec, torch, numpy and Python that wrote it. Everything is inline: the
figures are PNG ``data:`` URIs, the style sheet is in ``<style>``, no font, script or image
is fetched, so the file opens offline and can be mailed or archived as it is.

Inputs (one, a list of them, or a ``{label: input}`` mapping):

- an analysis (:func:`jacspec.analyze`'s result, or its ``jacspec analyze --json`` file);
- the ``jacspec demo --json`` file (metrics side by side);
- sensitivity results (:class:`~jacspec.sensitivity.norms.PerPointSensitivity`,
  :class:`~jacspec.sensitivity.trajectories.TrajectoryProfile` objects or the
  ``jacspec sensitivity --json`` file);
- theory results (``mean_field``, ``critical_point``, ``jacobian_spectrum``,
  ``simulate_spectrum`` or the ``jacspec theory ... --json`` files);
- a zoo (its SQLite results store: score table and scatter plots of each metric against the
  gap; or a :class:`~jacspec.zoo.rank.score.ScoreTable` / ``jacspec zoo score --json`` file:
  score table only);
- a tracking result: a DataFrame (or an object whose ``to_frame()`` is one) with a ``step``
  column and one column per metric, or a JSON/JSONL/CSV/SQLite file of such rows;
- a :class:`Section` built by hand;
- any other result with ``to_dict()`` (and optionally ``to_frame()``, ``plot()``).

Every table cell shows its number with 4 significant digits and carries the exact value
(``repr`` of the float) in ``data-value``, with ``data-row``/``data-key`` naming the row and
the column, so the numbers of the page can be checked against the JSON.

The page is built in three steps, each in its module: reading inputs
(:mod:`jacspec.report.html_inputs`), one :class:`Section` per result
(:mod:`jacspec.report.html_sections`) and the HTML/CSS templating
(:mod:`jacspec.report.html_render`); their public names are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jacspec.report.html_inputs import KINDS, detect_kind, load_input, records_with_step
from jacspec.report.html_render import Section, Table, render_html, versions
from jacspec.report.html_sections import build_section, is_profile

__all__ = ["KINDS", "Section", "Table", "build_section", "detect_kind", "load_input",
           "render_html", "versions", "write_report"]


def _items(result_or_results: Any) -> list[tuple[str | None, Any]]:
    """``[(label or None, input)]`` of a result, a list of them or a ``{label: input}``."""
    import pandas as pd

    if isinstance(result_or_results, Mapping):
        try:
            detect_kind(result_or_results)
            return [(None, result_or_results)]
        except ValueError:
            values = list(result_or_results.values())
            if values and all(not isinstance(v, (int, float, bool)) and v is not None
                              for v in values):
                return [(str(k), v) for k, v in result_or_results.items()]
            raise
    if isinstance(result_or_results, (list, tuple)) and not records_with_step(
            list(result_or_results)):
        if not result_or_results:
            raise ValueError("result_or_results is empty; pass at least one result")
        if all(is_profile(p) for p in result_or_results):
            return [(None, list(result_or_results))]
        return [(None, r) for r in result_or_results]
    if isinstance(result_or_results, pd.Series):
        raise TypeError("a Series cannot be reported; pass a DataFrame with a 'step' column")
    return [(None, result_or_results)]


def write_report(result_or_results: Any, path: str | os.PathLike[str], *,
                 title: str | None = None) -> Path:
    """Write one self-contained HTML page of the results to ``path``; returns the path.

    ``result_or_results``: a result, a JSON payload, a file path (JSON, JSONL, CSV or SQLite
    store), a :class:`Section`, a list of those, or ``{label: result}`` (labels become the
    section titles). ``title``: the page's heading (default ``"jacspec report"``, or that of
    the single result). The parent folder is created if missing.
    """
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; write_report takes a file path "
                         "(e.g. report.html)")
    sections = [build_section(r, title=label) for label, r in _items(result_or_results)]
    if title is None:
        title = ("jacspec report" if len(sections) != 1
                 else f"jacspec report: {sections[0].title}")
    text = render_html(sections, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
