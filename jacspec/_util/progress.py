"""The one progress bar of jacspec: ``tqdm.auto`` (imported only when a bar is shown)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(enabled: bool, *, desc: str, total: int | None = None, unit: str = "it",
                 iterable: Iterable[Any] | None = None) -> Any | None:
    """A ``tqdm`` bar named ``desc`` counting ``unit`` up to ``total`` (wrapping
    ``iterable`` when given), or None when not ``enabled``; the caller closes it."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)
