"""Ray start-up shared by every Ray backend (the zoo's sweeps, the sharded Gram): a bounded
``ray.init``, and a session that shuts down what it started.

Ray (the ``ray`` extra) is imported lazily (inside :func:`ray_session`), so importing this
module is cheap; without it the session raises a one-line MissingExtraError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jacspec._util.extras import require

logger = logging.getLogger(__name__)

__all__ = ["RAY_START_TIMEOUT", "ray_session", "start_ray"]

RAY_START_TIMEOUT = 60.0
#: What a failed start tells the user to do instead (the zoo's CLI flag by default).
DEFAULT_HINT = "use --backend local"


def start_ray(
    ray: Any, timeout: float, *, hint: str = DEFAULT_HINT, **kwargs: Any
) -> threading.Event:
    """``ray.init(**kwargs)`` in a daemon thread, waited for at most ``timeout`` seconds.

    A start that does not finish in time raises TimeoutError, one that fails raises
    ConnectionError; both say "Ray could not start within N s: <reason>; <hint>". (A local
    Ray that cannot start otherwise blocks its caller forever.)

    After a successful start the thread stays alive until the returned event is set (after
    ``ray.shutdown()``): on Linux a local Ray's daemons die with the *thread* that started
    them (``PR_SET_PDEATHSIG``), so a thread that returned would take them down with it.
    """
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
            and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"ray_timeout must be a positive number of seconds, got {timeout!r}")
    where = "Ray" if kwargs.get("address") in (None, "local") else \
        f"Ray (cluster at {kwargs['address']})"
    box: dict[str, BaseException] = {}
    started, release = threading.Event(), threading.Event()

    def target() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
            return
        finally:
            started.set()
        release.wait()  # keep Ray's daemons' parent thread alive until shut down

    thread = threading.Thread(target=target, name="jacspec-ray-init", daemon=True)
    thread.start()
    started.wait(timeout)
    if not started.is_set():
        _stop_ray(ray)
        raise TimeoutError(f"{where} could not start within {timeout:g} s: ray.init() did not "
                           "return (a local Ray may be unable to start its processes here); "
                           f"{hint}")
    if "error" in box:
        exc = box["error"]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        _stop_ray(ray)
        raise ConnectionError(f"{where} could not start within {timeout:g} s: {reason}; "
                              f"{hint}") from exc
    return release


def _stop_ray(ray: Any, wait: float = 5.0) -> None:
    """Best-effort ``ray.shutdown()`` after a failed start, never blocking more than ``wait``."""

    def target() -> None:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - nothing more to clean up
            logger.debug("ray.shutdown after a failed start: %s", traceback.format_exc())

    thread = threading.Thread(target=target, name="jacspec-ray-shutdown", daemon=True)
    thread.start()
    thread.join(wait)


@contextlib.contextmanager
def ray_session(
    address: str | None,
    timeout: float,
    *,
    hint: str = DEFAULT_HINT,
    **init_kwargs: Any,
) -> Iterator[Any]:
    """The ``ray`` module, connected to the cluster at ``address`` (or, for None, a private
    local instance started, within ``timeout`` seconds: ``ray.init(address="local")``, never
    a cluster someone else started on this machine) for the duration of the block; shut
    down after it if started here. A Ray already initialised in this process is used as it is.

    ``init_kwargs`` go to ``ray.init`` (for example ``num_cpus`` of a local instance). From
    a source checkout, workers get the checkout on their ``PYTHONPATH`` so they import the
    same jacspec.
    """
    ray = require("ray", "ray", "jacspec's backend 'ray'")
    started_here = not ray.is_initialized()
    if started_here:
        extra: dict[str, Any] = {"include_dashboard": False} if address is None else {}
        root = str(Path(__file__).resolve().parents[2])
        if "site-packages" not in root:  # a source checkout: let Ray workers import jacspec
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            extra["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        release = start_ray(ray, timeout, hint=hint,
                            address="local" if address is None else address,
                            ignore_reinit_error=True, log_to_driver=False,
                            logging_level=logging.WARNING, **{**extra, **init_kwargs})
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
            release.set()
