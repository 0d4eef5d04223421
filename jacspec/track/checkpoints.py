"""A tracker over a folder of saved checkpoints: step numbers from the file names
(:func:`checkpoint_step`), the checkpoints in step order (:func:`find_checkpoints`) and one
tracked row per checkpoint (:func:`track_checkpoints`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from jacspec.track.tracker import Tracker

__all__ = ["CHECKPOINT_SUFFIXES", "checkpoint_step", "find_checkpoints", "track_checkpoints"]

#: Checkpoint file suffixes :func:`find_checkpoints` picks up.
CHECKPOINT_SUFFIXES = (".pt", ".pth")
_STEP_WORD = re.compile(r"(?:global_step|step|iteration|iter|it)[=_-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step number in a checkpoint's file name: the digits after ``step``/``iter``
    (``step_000100.pt``, ``epoch=2-step=300.pt``), else the last digits of the name
    (``ckpt-100.pt``); None when the name has no digits."""
    stem = Path(path).stem
    found = _STEP_WORD.findall(stem)
    if found:
        return int(found[-1])
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def find_checkpoints(folder: str | os.PathLike) -> tuple[list[tuple[int, Path]], str]:
    """``([(step, path), ...] ascending, how)`` for the ``*.pt``/``*.pth`` files of ``folder``.

    Steps come from the file names (:func:`checkpoint_step`, ``how="name"``); when some name
    has no number, the files are ordered by modification time and numbered 0, 1, ...
    (``how="mtime"``). Two files with one step number are refused.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} does not exist (or is not a "
                                "folder)")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if not files:
        raise ValueError(f"checkpoint folder {str(root)!r} holds no {'/'.join(CHECKPOINT_SUFFIXES)}"
                         " files (jacspec.save_checkpoint writes them, e.g. step_000100.pt)")
    steps = [checkpoint_step(p) for p in files]
    if any(s is None for s in steps):
        by_time = sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
        return list(enumerate(by_time)), "mtime"
    seen: dict[int, Path] = {}
    for s, p in zip(steps, files, strict=True):
        assert s is not None
        if s in seen:
            raise ValueError(f"checkpoints {seen[s].name!r} and {p.name!r} in {str(root)!r} both "
                             f"name step {s}; keep one checkpoint per step")
        seen[s] = p
    return sorted(seen.items()), "name"


def track_checkpoints(
    tracker: Tracker,
    folder: str | os.PathLike,
    *,
    trust: bool = False,
    skip_tracked: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``tracker`` over the checkpoints of ``folder`` (:func:`find_checkpoints`), loading
    each with :func:`jacspec.load_model` (``trust`` as there); steps not divisible by
    ``tracker.every`` are passed over, and (``skip_tracked``) so are steps already in the
    tracker (a store continued after an interruption). Returns the new rows."""
    import jacspec

    found, _ = find_checkpoints(folder)
    todo = [(s, p) for s, p in found if s % tracker.every == 0 and
            not (skip_tracked and s in tracker._rows)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="track", unit="ckpt")
    rows = []
    try:
        for s, p in todo:
            model = jacspec.load_model(p, trust=trust)
            row = tracker.step(model, s)
            if row is not None:
                row["checkpoint"] = str(p)
                rows.append(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows
