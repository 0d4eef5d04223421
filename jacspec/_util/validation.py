"""Error helpers: every bad input ends in a ValueError/TypeError naming the argument."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, Literal, overload


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming ``name``."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(options)}")
    return value


@overload
def positive_int(name: str, value: Any, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def positive_int(name: str, value: Any, *, allow_none: bool) -> int | None: ...
def positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` if it is an integer >= 1 (``int`` or numpy integer, not a bool);
    None passes when ``allow_none``; anything else raises a ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        accepted = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return int(value)
