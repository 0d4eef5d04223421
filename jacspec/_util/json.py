"""The one JSON conversion of jacspec: results, settings and CLI payloads go through here.

``jsonable(obj)`` maps a value onto plain JSON types (dict with str keys, list, str, int,
float, bool, None) so that ``json.loads(json.dumps(jsonable(x))) == jsonable(x)``:

- numpy / torch scalars -> Python scalars; arrays and tensors -> nested lists;
- non-finite floats (NaN, +-Inf) -> None (JSON has no NaN);
- ``Path`` -> str; tuples and sets -> lists; mapping keys -> str;
- a result object with ``to_dict()`` -> its dict; another dataclass -> a dict of its fields;
- pandas DataFrame -> list of row records, Series -> dict; dtypes, devices, enums and any
  other object -> ``str(obj)`` (a readable name, never a number).

Neither numpy's nor torch's import is triggered here: they are only recognised when loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

__all__ = ["dumps", "jsonable", "write_json"]


def _is_pandas(obj: Any, name: str) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, getattr(pd, name))


def jsonable(obj: Any) -> Any:
    """Plain JSON types for ``obj`` (recursively); NaN/Inf become None. See the module doc."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return jsonable(obj.tolist())
        if isinstance(obj, np.generic):
            return jsonable(obj.item())
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if _is_pandas(obj, "DataFrame"):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if _is_pandas(obj, "Series"):
        return jsonable(obj.to_dict())
    if isinstance(obj, complex):
        raise TypeError(f"cannot write the complex number {obj!r} as JSON")
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):
        return jsonable(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if pd_missing(obj):
        return None
    return str(obj)


def pd_missing(obj: Any) -> bool:
    """True for pandas' missing-value markers (``pd.NA``, ``pd.NaT``)."""
    pd = sys.modules.get("pandas")
    return pd is not None and (obj is pd.NA or obj is pd.NaT)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``jsonable(obj)`` (strict JSON: no NaN); ``kwargs`` go to json.dumps."""
    return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def write_json(obj: Any, path: str | Path, *, indent: int | None = 2) -> Path:
    """Write ``dumps(obj)`` (plus a final newline) to ``path``, creating its folder."""
    p = Path(path)
    text = dumps(obj, indent=indent)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")
    return p
