"""An append-only JSON-lines store for a :class:`jacspec.track.Tracker` that survives a crash.

Layout: the first line is a header ``{"format": "jacspec-track", "version": 1, "settings":
{...}}``; every further line is one tracked step (a flat JSON object: ``step``, ``time``,
``seconds``, the metrics, ``warning``, and ``layers`` when layer rows were asked for). Each
line is flushed and ``os.fsync``'d as it is written, so a crash loses at most the line being
written. Reading back ignores an incomplete last line (with a warning); opening the store to
append cuts that line off first, so the next row starts on a line of its own. A row whose
step is already in the store supersedes the earlier one (a run resumed from a checkpoint
recomputes its steps), both when read back and in memory.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jacspec._util.json import jsonable

FORMAT = "jacspec-track"
VERSION = 1

#: Settings that must match for new rows to continue a store: they decide the numbers.
IDENTITY_KEYS = ("probe", "output", "scale", "dtype", "layers", "analyze", "norm_output")


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"))


def read_store(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """``(settings, rows, good_bytes)`` of the store at ``path``.

    ``rows`` are in file order (duplicates of a step kept; see :func:`dedupe`); ``good_bytes``
    is the length of the complete lines (less than the file's size when its last line was
    cut by a crash: that line is ignored with a warning). A damaged line elsewhere, or a file
    that is not a tracker store, is a ValueError naming the line.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"store {str(p)!r} is a folder; store takes a file path (.jsonl)")
    data = p.read_bytes()
    lines = data.split(b"\n")
    good = 0
    parsed: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if last and raw == b"":
            break
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            if last:  # no newline after it: the write was interrupted
                warnings.warn(
                    f"store {str(p)!r}: ignoring an incomplete last line ({len(raw)} bytes, "
                    "left by an interrupted write)",
                    UserWarning,
                    stacklevel=3,
                )
                break
            raise ValueError(
                f"store {str(p)!r} line {i + 1} is not a JSON object ({exc}); the file is "
                "damaged or not a jacspec tracker store"
            ) from None
        if last:
            # A complete JSON object without its newline: keep it (the newline is added
            # before anything else is appended).
            parsed.append(obj)
            good += len(raw)
            break
        parsed.append(obj)
        good += len(raw) + 1
    if not parsed:
        return {}, [], good
    header = parsed[0]
    if header.get("format") != FORMAT:
        raise ValueError(
            f"store {str(p)!r} is not a jacspec tracker store (its first line has no "
            f"\"format\": \"{FORMAT}\")"
        )
    if int(header.get("version", 0)) > VERSION:
        raise ValueError(
            f"store {str(p)!r} has version {header.get('version')}; this jacspec reads "
            f"version {VERSION} (upgrade jacspec)"
        )
    rows = parsed[1:]
    for j, row in enumerate(rows):
        if not isinstance(row.get("step"), int):
            raise ValueError(f"store {str(p)!r} line {j + 2} has no integer 'step'")
    return dict(header.get("settings") or {}), rows, good


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step, the last written winning, in the order the steps were first met."""
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        latest[row["step"]] = row
    return list(latest.values())


def check_compatible(path: Path, stored: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Refuse to continue a store written with settings that give other numbers."""
    for key in IDENTITY_KEYS:
        old, new = jsonable(stored.get(key)), jsonable(settings.get(key))
        if old != new:
            raise ValueError(
                f"store {str(path)!r} was written with {key}={old!r}, this tracker has "
                f"{key}={new!r}; continue it with the same probe data and options, or give "
                "another store path"
            )


class Store:
    """An open tracker store: rows read back on open, :meth:`append` writes one more.

    ``Store(path, settings)`` creates the file with its header, or reopens an existing one
    (checked against ``settings`` with :func:`check_compatible`; an incomplete last line is
    cut off with a warning).
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"store {str(self.path)!r} is a folder; store takes a file path")
        self.rows: list[dict[str, Any]] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            stored, rows, good = read_store(self.path)
            if not stored and not rows:  # only a cut header line: start afresh
                self._write_line(self._header(settings), mode="wb")
                return
            check_compatible(self.path, stored, settings)
            self.rows = rows
            size = self.path.stat().st_size
            with open(self.path, "r+b") as fh:
                if good < size:
                    fh.truncate(good)
                fh.seek(0, os.SEEK_END)
                if good > 0:
                    fh.seek(good - 1)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line(self._header(settings), mode="wb")

    @staticmethod
    def _header(settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "settings": dict(settings)}

    def _write_line(self, obj: Mapping[str, Any], mode: str = "ab") -> None:
        line = (_dumps(obj) + "\n").encode("utf-8")
        with open(self.path, mode) as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row as a line (flushed and fsync'd before returning)."""
        self._write_line(row)
        self.rows.append(jsonable(dict(row)))


__all__ = ["FORMAT", "VERSION", "Store", "check_compatible", "dedupe", "jsonable", "read_store"]
