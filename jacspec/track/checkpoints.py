"""A tracker over a folder of saved checkpoints: step numbers from the file names
(:func:`checkpoint_step`), the checkpoints in step order (:func:`scan_checkpoints`,
:func:`find_checkpoints`) and one tracked row per checkpoint (:func:`track_checkpoints`).

The files are whole models (jacspec checkpoints, TorchScript, exported programs) or, with
a ``factory`` (``package.module:factory``), weights for it: state_dicts or PyTorch Lightning
``.ckpt`` files (their ``state_dict``, with its ``model.`` prefix dropped).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from jacspec._util.progress import progress_bar


class Steps(Protocol):
    """What :func:`track_checkpoints` needs of a tracker (a
    :class:`~jacspec.track.tracker.Tracker`, named here without importing it: the tracker
    module re-exports this one's names)."""

    every: int

    @property
    def steps(self) -> list[int]: ...

    def step(self, model: Any, step: int) -> dict[str, Any] | None: ...


__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointFolder", "UnnumberedCheckpointsWarning",
           "checkpoint_step", "find_checkpoints", "scan_checkpoints", "track_checkpoints"]

#: Checkpoint file suffixes :func:`find_checkpoints` picks up (.ckpt: PyTorch Lightning).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
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


class UnnumberedCheckpointsWarning(UserWarning):
    """Some checkpoints of a folder have no step number in their names and are left out."""


class CheckpointFolder(NamedTuple):
    """The checkpoints of a folder: ``found`` ``[(step, path), ...]`` ascending, ``how`` the
    steps came (``"name"`` or ``"mtime"``) and the ``unnumbered`` files left out."""

    found: list[tuple[int, Path]]
    how: str
    unnumbered: list[Path]


def scan_checkpoints(folder: str | os.PathLike) -> CheckpointFolder:
    """The ``*.pt``/``*.pth``/``*.ckpt`` files of ``folder`` in step order.

    Steps come from the file names (:func:`checkpoint_step`, ``how="name"``); files whose
    names have no number (``best.pt``, ``last.ckpt``) beside numbered ones cannot be placed
    on the step axis and are returned as ``unnumbered``. When no name has a number, the
    files are ordered by modification time and numbered 0, 1, ... (``how="mtime"``). Two
    files with one step number are refused.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} does not exist (or is not a "
                                "folder)")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if not files:
        raise ValueError(f"checkpoint folder {str(root)!r} holds no {'/'.join(CHECKPOINT_SUFFIXES)}"
                         " files (e.g. step_000100.pt: jacspec.save_checkpoint, TorchScript, "
                         "torch.export, or state_dicts/Lightning .ckpt files for "
                         "package.module:factory --weights DIR)")
    steps = [checkpoint_step(p) for p in files]
    if all(s is None for s in steps):
        by_time = sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
        return CheckpointFolder(list(enumerate(by_time)), "mtime", [])
    seen: dict[int, Path] = {}
    unnumbered = []
    for s, p in zip(steps, files, strict=True):
        if s is None:
            unnumbered.append(p)
            continue
        if s in seen:
            raise ValueError(f"checkpoints {seen[s].name!r} and {p.name!r} in {str(root)!r} both "
                             f"name step {s}; keep one checkpoint per step")
        seen[s] = p
    return CheckpointFolder(sorted(seen.items()), "name", unnumbered)


def unnumbered_message(unnumbered: list[Path]) -> str:
    """One line naming the checkpoints left out for want of a step number."""
    names = ", ".join(p.name for p in unnumbered)
    many = len(unnumbered) != 1
    return (f"{len(unnumbered)} checkpoint{'s' if many else ''} without a step number in "
            f"{'their names' if many else 'its name'} left out: {names} (rename "
            f"{'them' if many else 'it'} with the step, e.g. step_000120.pt, to track "
            f"{'them' if many else 'it'})")


def find_checkpoints(folder: str | os.PathLike) -> tuple[list[tuple[int, Path]], str]:
    """``([(step, path), ...] ascending, how)`` of :func:`scan_checkpoints`; files left out
    for want of a step number are named in one :class:`UnnumberedCheckpointsWarning`."""
    found, how, unnumbered = scan_checkpoints(folder)
    if unnumbered:
        warnings.warn(unnumbered_message(unnumbered), UnnumberedCheckpointsWarning,
                      stacklevel=2)
    return found, how


def track_checkpoints(
    tracker: Steps,
    folder: str | os.PathLike,
    *,
    factory: str | None = None,
    trust: bool = False,
    skip_tracked: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``tracker`` over the checkpoints of ``folder`` (:func:`find_checkpoints`), loading
    each with :func:`jacspec.models.loading.load_model` (``trust`` as there): as a model, or
    with ``factory`` (``"package.module:factory"``) as its weights (a state_dict or a
    Lightning ``.ckpt``). Steps not divisible by ``tracker.every`` are passed over, and
    (``skip_tracked``) so are steps already in the tracker (a store continued after an
    interruption). Returns the new rows, each with its ``checkpoint`` path."""
    from jacspec.models.loading import load_model

    found, _ = find_checkpoints(folder)
    done = set(tracker.steps) if skip_tracked else set()
    todo = [(s, p) for s, p in found if s % tracker.every == 0 and s not in done]
    bar = progress_bar(progress, total=len(todo), desc="track", unit="ckpt")
    rows = []
    try:
        for s, p in todo:
            model = (load_model(p, trust=trust) if factory is None else
                     load_model(factory, weights=p, trust=trust))
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
