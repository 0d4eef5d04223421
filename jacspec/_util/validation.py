"""Error helpers: every bad input ends in a ValueError/TypeError naming the argument."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming ``name``."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(options)}")
    return value
