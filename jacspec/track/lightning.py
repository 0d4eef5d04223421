"""PyTorch Lightning adapter: ``Trainer(callbacks=[JacspecCallback(tracker)])``.

:class:`JacspecCallback` (defined only when ``lightning`` or ``pytorch_lightning`` can be
imported) calls ``tracker.step(pl_module, trainer.global_step)`` after every training batch;
the tracker measures when ``global_step % every == 0``. Only the global-zero process
measures (``trainer.is_global_zero``), and a step is measured once even when gradient
accumulation ends several batches on the same ``global_step``. The logic lives in
:class:`TrackerCallbackMixin`, which needs no Lightning (and is what the tests exercise).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrackerCallbackMixin", "lightning_callback_base"]


class TrackerCallbackMixin:
    """``on_train_batch_end`` -> ``tracker.step(pl_module, trainer.global_step)``, once per
    step, on global rank zero only; the row of the last measured step is ``self.last_row``."""

    def __init__(self, tracker: Any) -> None:
        if not callable(getattr(tracker, "step", None)):
            raise TypeError(f"tracker must be a jacspec.Tracker; got {type(tracker).__name__}")
        super().__init__()
        self.tracker = tracker
        self.last_row: dict[str, Any] | None = None
        self._last_step: int | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any = None,
                           batch: Any = None, batch_idx: int = 0, *args: Any) -> None:
        if not getattr(trainer, "is_global_zero", True):
            return
        step = int(trainer.global_step)
        if step == self._last_step:
            return
        self._last_step = step
        row = self.tracker.step(pl_module, step)
        if row is not None:
            self.last_row = row


def lightning_callback_base() -> type | None:
    """Lightning's ``Callback`` class (``lightning.pytorch``, else ``pytorch_lightning``), or
    None when neither package can be imported."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name).Callback
        except ImportError:
            continue
    return None


_BASE = lightning_callback_base()

if _BASE is not None:

    class JacspecCallback(TrackerCallbackMixin, _BASE):  # type: ignore[misc, valid-type]
        """Lightning ``Callback`` tracking the Jacobian spectrum with a :class:`Tracker`."""

    __all__.append("JacspecCallback")

else:

    def __getattr__(name: str) -> Any:
        if name == "JacspecCallback":
            raise ImportError(
                "JacspecCallback needs PyTorch Lightning (pip install lightning); without it, "
                "call tracker.step(model, step) from the training loop"
            )
        raise AttributeError(f"module 'jacspec.track.lightning' has no attribute {name!r}")
