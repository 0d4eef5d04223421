"""Watch a network's Jacobian spectrum while it trains (:class:`Tracker`), from any training
loop; rows go to a crash-safe JSON-lines store (:mod:`jacspec.track.store`). The optional
PyTorch Lightning callback is :class:`jacspec.track.lightning.JacspecCallback`; the figures
are drawn by :mod:`jacspec.report.report_figures` (:meth:`Tracker.plot`).
"""

from __future__ import annotations

from jacspec.track.tracker import DEFAULT_METRICS, METRICS, Tracker

__all__ = ["DEFAULT_METRICS", "METRICS", "Tracker"]
