"""The one memory budget of jacspec: how many bytes a computation may take, and its sizes
written for people. Used by the Gram (:func:`jacspec.spectra.gram.check_fits`), the ESD
plan and :func:`jacspec.jacobian.engine.jacobians`."""

from __future__ import annotations

import numbers

import psutil

GIB = 2**30
#: Share of the available memory used when no ``max_memory`` is given.
DEFAULT_SHARE = 0.8


def available_bytes() -> int:
    """Memory this process may still take (psutil's ``available``)."""
    return int(psutil.virtual_memory().available)


def memory_limit(max_memory: int | None) -> int:
    """Bytes a computation may take: ``max_memory``, else 80% of the available memory.

    ``max_memory`` must be a positive number of bytes (ValueError otherwise: a budget of 0 or
    less would refuse every computation, or worse, look like "no limit").
    """
    if max_memory is None:
        return int(DEFAULT_SHARE * available_bytes())
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Real) or not (
        max_memory > 0 and max_memory != float("inf")
    ):
        raise ValueError(f"max_memory must be a positive number of bytes; got {max_memory!r}")
    return int(max_memory)


def format_bytes(num: float) -> str:
    """Human-readable size: ``1.50 GiB``, ``12.0 MiB``, ``512 B``."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if num >= size:
            return f"{num / size:.2f} {unit}"
    return f"{int(num)} B"
