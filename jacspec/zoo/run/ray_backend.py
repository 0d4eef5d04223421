"""The Ray backend of :func:`jacspec.zoo.run.sweep.run_sweep`: one Ray task per chunk of
configurations. The bounded start-up (``start_ray``, ``ray_session``) lives in
:mod:`jacspec._util.ray`, shared with the sharded Gram, and is re-exported here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jacspec._util.ray import RAY_START_TIMEOUT, ray_session, start_ray

__all__ = ["RAY_START_TIMEOUT", "ray_session", "run_ray", "start_ray"]


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
