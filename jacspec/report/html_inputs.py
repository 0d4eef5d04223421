"""What a report reads: files (:func:`load_input`: JSON, JSONL, CSV, a zoo's SQLite store or
an SQLite table of tracked steps) and the kind of a JSON payload (:func:`detect_kind`)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jacspec.report.html_render import frame_of

__all__ = ["KINDS", "detect_kind", "load_input"]

#: Kinds of result a section can show.
KINDS = ("analysis", "comparison", "sensitivity", "theory", "zoo", "tracking", "result")


def _sqlite_tables(path: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: [r[1] for r in con.execute(f"PRAGMA table_info('{n}')")] for n in names}
    finally:
        con.close()


def _is_zoo_store(path: Path) -> bool:
    tables = _sqlite_tables(path)
    return "runs" in tables and {"config_hash", "config", "status"} <= set(tables["runs"])


def load_input(path: str | os.PathLike[str]) -> Any:
    """What a file holds, ready for :func:`build_section`: a JSON file's payload, the rows of
    a JSONL/CSV tracking file (a DataFrame), a zoo store (its :class:`Path`, tagged) or the
    rows of an SQLite table with a ``step`` column."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise OSError(f"input {str(path)!r} does not exist")
    if p.is_dir():
        raise ValueError(f"input {str(path)!r} is a folder; jacspec report takes JSON files "
                         "(from --json), tracking files (.jsonl, .csv) or SQLite stores")
    with p.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        if _is_zoo_store(p):
            return ZooStore(p)
        for table, cols in _sqlite_tables(p).items():
            if "step" in cols:
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                try:
                    frame = pd.read_sql_query(f"SELECT * FROM '{table}'", con)
                finally:
                    con.close()
                return _expand_json_columns(frame)
        raise ValueError(f"{p}: an SQLite file that is neither a zoo store (table runs) nor a "
                         "tracking store (a table with a step column)")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not a text file; jacspec report reads the JSON files of "
                         "--json, JSONL/CSV tracking files and SQLite stores") from None
    if suffix == ".jsonl":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        first = json.loads(lines[0]) if lines else {}
        if isinstance(first, Mapping) and first.get("format") == "jacspec-track":
            from jacspec.track import Tracker

            return Tracker.load(p)
        return frame_of([json.loads(ln) for ln in lines])
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            return frame_of([json.loads(ln) for ln in lines])
        except json.JSONDecodeError:
            raise ValueError(f"{p} is not JSON ({exc.msg} at line {exc.lineno}); jacspec "
                             "report reads the JSON files of --json, JSONL/CSV tracking "
                             "files and SQLite stores") from None


def _expand_json_columns(frame: Any) -> Any:
    """Columns holding JSON objects (a store's ``metrics`` text) spread into columns."""
    import pandas as pd

    for col in list(frame.columns):
        s = frame[col]
        if s.dtype == object and s.map(lambda v: isinstance(v, str) and v[:1] == "{").all():
            try:
                wide = pd.DataFrame([json.loads(v) for v in s], index=frame.index)
            except json.JSONDecodeError:
                continue
            frame = pd.concat([frame.drop(columns=[col]), wide], axis=1)
    return frame


@dataclass(frozen=True)
class ZooStore:
    """A model-zoo store directory given as the report's input."""

    path: Path


def records_with_step(value: Any) -> bool:
    """True for a non-empty list of records that each have a ``step``."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(r, Mapping) and "step" in r for r in value))


def detect_kind(payload: Any) -> str:
    """The kind (:data:`KINDS`) of a JSON payload from its keys; ValueError when it is none
    that jacspec writes."""
    if records_with_step(payload):
        return "tracking"
    if not isinstance(payload, Mapping):
        raise ValueError(f"cannot report a JSON {type(payload).__name__}: expected an object "
                         "written by a jacspec command, or a list of tracking rows with 'step'")
    keys = set(payload)
    metrics = payload.get("metrics")
    if {"factors", "gap"} <= keys and isinstance(metrics, Mapping):
        return "zoo"
    if keys & {"trajectories", "per_point"} and "jacobian_norm_mean" in keys | set(
            payload.get("per_point") or {}):
        return "sensitivity"
    if "eigenvalues" in keys and isinstance(metrics, Mapping):
        return "analysis"
    if isinstance(metrics, Mapping) and metrics and all(isinstance(v, Mapping)
                                                        for v in metrics.values()):
        return "comparison"
    if {"grid", "density"} <= keys or {"q_star", "chi"} <= keys or (
            {"sigma_w2", "sigma_b2", "q_star"} <= keys):
        return "theory"
    if isinstance(payload.get("step"), list) or any(records_with_step(v)
                                                    for v in payload.values()):
        return "tracking"
    shown = ", ".join(sorted(map(str, keys))[:8]) or "(none)"
    raise ValueError(f"cannot tell which jacspec result this is (keys: {shown}); expected the "
                     "JSON of jacspec analyze, demo, sensitivity, theory, zoo score or a "
                     "tracker's rows (with 'step')")

