"""The settings of one :func:`jacspec.analyze` call: its arguments checked and resolved once.

:func:`run_settings` validates analyze's choices, resolves the Jacobian options (keywords
over ``options=``, the sketch, an input module) and starts the ``settings`` dict the
:class:`~jacspec.analysis.result.Analysis` keeps; :func:`record_plans` and
:func:`record_row` add what each row was planned as and how it was computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec._util.validation import check_choice
from jacspec.analysis.columns import SKETCHED
from jacspec.analysis.plan import RowPlan
from jacspec.analysis.sketched import sketched_reason
from jacspec.jacobian.input_module import at_input_module
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.spectra.exact import SCALES
from jacspec.spectra.gram import SIDES

__all__ = ["METHODS", "RANDOMIZE_MAX_BYTES", "RunSettings", "record_plans", "record_row",
           "run_settings"]

#: analyze's ``method``: how a row's ESD is computed (exact, exact when it fits, SLQ).
METHODS = ("exact", "auto", "slq")
#: Largest data Jacobian (float64 bytes) held for the randomized null.
RANDOMIZE_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True)
class RunSettings:
    """analyze's arguments as every row reads them: the model and data (at the input module
    when one is set), the resolved ``options`` and ``row_options`` (the engine's progress
    bar off while a bar counts the rows), the ESD and null choices, the power-law
    ``fit_kwargs``, and ``settings`` (the dict the result keeps, filled in row by row)."""

    model: nn.Module
    data: Any
    options: JacobianOptions
    row_options: JacobianOptions
    scale: str
    side: str
    method: str
    layers: str | list[str] | None
    randomize: bool
    randomize_max_bytes: int
    seed: int
    max_memory: int | None
    deflate: bool
    fit_kwargs: dict[str, Any]
    seed_from: str
    settings: dict[str, Any]

    @property
    def row_bar(self) -> bool:
        """Whether one progress bar counts the rows (progress asked and layers analysed)."""
        return bool(self.options.progress and self.layers is not None)


def run_settings(
    model: nn.Module, data: Any, *, options: JacobianOptions | None,
    jac_fields: dict[str, Any], fit_kwargs: dict[str, Any], output: str | None, scale: str,
    side: str, method: str, layers: str | Sequence[str] | None, randomize: bool,
    randomize_max_bytes: int, seed: int, dtype: torch.dtype | None,
    device: torch.device | str | None, batch_size: int | None, max_memory: int | None,
    deflate: bool, jacobian_method: str | None, progress: bool | None, route: str | None,
    sketch: int | str | None,
) -> RunSettings:
    """Check analyze's choices and resolve its options once (``jacobian_method`` is the
    engine's ``method``; ``sketch="auto"`` leaves ``options.sketch`` as set); the recorded
    ``settings["jacobian"]`` are the options as given, before any input module."""
    check_choice("method", method, METHODS)
    check_choice("scale", scale, SCALES)
    check_choice("side", side, SIDES)
    opts = resolve_options(
        options, labels={"method": "jacobian_method"}, output=output, dtype=dtype,
        device=device, batch_size=batch_size, method=jacobian_method, progress=progress,
        route=route, **jac_fields,
    )
    if sketch != "auto" or opts.sketch is None:
        opts = opts.replace(sketch=sketch)
    seed_from = "options.sketch_seed" if opts.sketch_seed is not None else "seed"
    given = opts
    model, data, opts = at_input_module(model, data, opts)
    if layers is not None and not isinstance(layers, str):
        layers = list(layers)
    settings: dict[str, Any] = {
        "output": opts.output, "scale": scale, "method": method, "side": side,
        "deflate": bool(deflate), "jacobian_method": opts.method, "jacobian": given.to_dict(),
        "seed": seed, "randomize": randomize, "layers": layers, "fit": dict(fit_kwargs),
        # the module whose output h is the rows' "input" (input->output, input->L)
        "input_module": given.input_module, "sketch": None,
    }
    show = opts.progress
    return RunSettings(
        model=model, data=data, options=opts,
        row_options=opts.replace(progress=show and layers is None),  # else the rows' bar
        scale=scale, side=side, method=method, layers=layers, randomize=randomize,
        randomize_max_bytes=randomize_max_bytes, seed=seed, max_memory=max_memory,
        deflate=deflate, fit_kwargs=fit_kwargs, seed_from=seed_from, settings=settings,
    )


def record_plans(run: RunSettings, plans: list[RowPlan]) -> None:
    """``settings["rows"]``: each row's planned method and reason (and, unless exact was
    asked, the input->output row's as ``estimate_method``/``estimate_reason``); skipped rows
    are named in one UserWarning."""
    settings = run.settings
    settings["rows"] = {p.label: {"method": p.method, "reason": p.reason} for p in plans}
    if run.method != "exact":
        settings["estimate_method"] = plans[0].method
        settings["estimate_reason"] = plans[0].reason
    skipped = [p for p in plans if p.method == "skipped"]
    if skipped:
        warnings.warn(
            "analyze: rows skipped (they do not fit in memory): "
            + "; ".join(f"{p.label}: {p.reason}" for p in skipped),
            UserWarning,
            stacklevel=3,  # the user's call of analyze
        )


def record_row(run: RunSettings, plan: RowPlan, route: str | None,
               sketch: dict[str, Any] | None) -> str:
    """Record the ``route`` a computed row took (None: not computed) and, for a sketched
    input->output row, its ``sketch`` info (``settings["sketch"]``, with ``seed_from``);
    return the row's method."""
    entry = run.settings["rows"][plan.label]
    if route is not None:
        entry["route"] = route
    if sketch is not None:
        run.settings["sketch"] = {**sketch, "seed_from": run.seed_from}
        entry.update(method=SKETCHED, reason=sketched_reason(sketch))
    return entry["method"]
