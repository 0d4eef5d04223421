"""Watch a network's Jacobian spectrum while it trains (:class:`Tracker`), from any training
loop; rows go to a crash-safe JSON-lines store (:mod:`jacspec.track.store`). The optional
PyTorch Lightning callback is :class:`jacspec.track.lightning.JacspecCallback`; figures are in
:mod:`jacspec.track.plots`.
"""

from __future__ import annotations

from jacspec.track.tracker import DEFAULT_METRICS, METRICS, Tracker

__all__ = ["DEFAULT_METRICS", "METRICS", "Tracker"]
