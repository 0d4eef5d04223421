"""The Ray backend of :func:`jacspec.zoo.sweep.run_sweep`: a bounded ``ray.init``, a session
that shuts down what it started, and one Ray task per chunk of configurations."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["RAY_START_TIMEOUT", "ray_session", "run_ray", "start_ray"]

RAY_START_TIMEOUT = 60.0


def start_ray(ray: Any, timeout: float, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` in a daemon thread, waited for at most ``timeout`` seconds.

    A start that does not finish in time raises TimeoutError, one that fails raises
    ConnectionError; both say "Ray could not start within N s: <reason>; use --backend
    local". (A local Ray that cannot start otherwise blocks the sweep forever.)
    """
    import threading

    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
            and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"ray_timeout must be a positive number of seconds, got {timeout!r}")
    where = "Ray" if kwargs.get("address") is None else \
        f"Ray (cluster at {kwargs['address']})"
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="jacspec-ray-init", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _stop_ray(ray)
        raise TimeoutError(f"{where} could not start within {timeout:g} s: ray.init() did not "
                           "return (a local Ray may be unable to start its processes here); "
                           "use --backend local")
    if "error" in box:
        exc = box["error"]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        _stop_ray(ray)
        raise ConnectionError(f"{where} could not start within {timeout:g} s: {reason}; "
                              "use --backend local") from exc


def _stop_ray(ray: Any, wait: float = 5.0) -> None:
    """Best-effort ``ray.shutdown()`` after a failed start, never blocking more than ``wait``."""
    import threading

    def target() -> None:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - nothing more to clean up
            logger.debug("ray.shutdown after a failed start: %s", traceback.format_exc())

    thread = threading.Thread(target=target, name="jacspec-ray-shutdown", daemon=True)
    thread.start()
    thread.join(wait)


@contextlib.contextmanager
def ray_session(address: str | None, timeout: float) -> Iterator[Any]:
    """The ``ray`` module, connected (or a private local instance started, within
    ``timeout`` seconds) for the duration of the block; shut down after it if started here."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("backend 'ray' needs the ray package: pip install 'jacspec[ray]'") \
            from exc
    started_here = not ray.is_initialized()
    if started_here:
        extra: dict[str, Any] = {"include_dashboard": False} if address is None else {}
        root = str(Path(__file__).resolve().parents[2])
        if "site-packages" not in root:  # a source checkout: let Ray workers import jacspec
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            extra["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        start_ray(ray, timeout, address=address, ignore_reinit_error=True,
                  log_to_driver=False, logging_level=logging.WARNING, **extra)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_ray(ray: Any, run_chunk: Callable[..., list[tuple[str, dict]]], job: str,
            chunks: list[list[dict]], threads: int,
            record: Callable[[list[tuple[str, dict]]], None],
            chunk_error: Callable[[list[dict], BaseException], list[tuple[str, dict]]]) -> None:
    """Run ``run_chunk(job, chunk, threads)`` as one Ray task per chunk (``threads`` CPUs
    each), handing each chunk's results to ``record`` as it finishes; a lost task's chunk
    is recorded as ``chunk_error(chunk, exc)``."""
    task = ray.remote(num_cpus=threads, max_retries=0)(run_chunk)
    pending = {task.remote(job, chunk, threads): chunk for chunk in chunks}
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            chunk = pending.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost task fails its chunk only
                results = chunk_error(chunk, exc)
            record(results)
