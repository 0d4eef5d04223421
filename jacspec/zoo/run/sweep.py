"""Sweeps: a TOML/YAML file describes a grid (or a random sample of it); one job per
configuration, run by a local process pool or a Ray cluster, results kept in a :class:`Store`.

File layout (TOML; YAML with the same keys works too)::

    [sweep]                       # all optional
    job = "jacspec.zoo.run.train:run_job"   # "module:function", function(config) -> result dict
    mode = "grid"                 # or "random": `samples` configurations drawn from the grid
    samples = 50
    seed = 0
    group = 2                     # jobs per task (start-up costs are paid once per task)
    [fixed]                       # keys shared by every configuration
    dataset = "mnist1d"
    [grid]                        # key = list of values; the grid is their product
    width = [32, 128]

A configuration is ``fixed | point``; its hash (see :func:`jacspec.zoo.run.store.config_hash`)
identifies the run, so rerunning a sweep skips finished runs and redoes interrupted ones.

A job function may carry ``job.validate_config(config)`` (the default trainer does: every key
and value is checked against what it accepts); :func:`run_sweep` calls it on every
configuration before it opens the store or starts a worker, so a typo stops the sweep with one
line instead of failing every run.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jacspec._util.extras import require
from jacspec._util.progress import progress_bar
from jacspec._util.random import numpy_generator
from jacspec._util.validation import positive_int
from jacspec.zoo.run.ray_backend import RAY_START_TIMEOUT, ray_session, run_ray
from jacspec.zoo.run.store import Store, config_hash

logger = logging.getLogger(__name__)

DEFAULT_JOB = "jacspec.zoo.run.train:run_job"
#: Job modules of older sweep files -> where they live now (``resolve_job`` reads these; the
#: old module itself is gone, the sweep file naming it keeps working).
MOVED_JOB_MODULES = {"jacspec.zoo.train": "jacspec.zoo.run.train"}
BACKENDS = ("local", "ray")
SWEEP_KEYS = ("job", "mode", "samples", "seed", "group", "name")


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: the configurations, the job that runs one, and the factors varied."""

    configs: tuple[dict[str, Any], ...]
    job: str = DEFAULT_JOB
    group: int | None = None
    factors: tuple[str, ...] = ()
    name: str = "sweep"
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "job": self.job, "group": self.group,
                "factors": list(self.factors), "num_configs": len(self.configs),
                "settings": dict(self.settings)}


@dataclass(frozen=True)
class SweepSummary:
    """What one call of :func:`run_sweep` did. ``errors``: config hash -> error of each run
    that failed in this call; ``previously_failed``: runs of the sweep left failed by an
    earlier call and not retried (``retry_failed=False``)."""

    total: int
    skipped: int
    ran: int
    done: int
    failed: int
    seconds: float
    backend: str
    workers: int
    group: int
    errors: dict[str, str] = field(default_factory=dict)
    previously_failed: int = 0

    @property
    def ok(self) -> bool:
        """True when no run of the sweep is failed (in this call or left from before)."""
        return self.failed == 0 and self.previously_failed == 0

    @property
    def settings(self) -> dict[str, Any]:
        """How the sweep ran: backend, workers, jobs per task."""
        return {"backend": self.backend, "workers": self.workers, "group": self.group}

    def to_dict(self) -> dict[str, Any]:
        """Every field and ``settings``."""
        return {**self.__dict__, "errors": dict(self.errors), "settings": self.settings}


def expand(spec: Mapping[str, Any]) -> Sweep:
    """Configurations described by a parsed sweep file (dict with sweep/fixed/grid tables)."""
    unknown = set(spec) - {"sweep", "fixed", "grid"}
    if unknown:
        raise ValueError(f"sweep file has unknown tables {sorted(unknown)}; "
                         "accepted: sweep, fixed, grid")
    for table in ("sweep", "fixed", "grid"):
        if not isinstance(spec.get(table) or {}, Mapping):
            raise ValueError(f"sweep file table [{table}] must hold key = value entries, got "
                             f"{type(spec[table]).__name__}")
    meta = dict(spec.get("sweep") or {})
    fixed = dict(spec.get("fixed") or {})
    grid = dict(spec.get("grid") or {})
    bad = sorted(set(meta) - set(SWEEP_KEYS))
    if bad:
        raise ValueError(f"sweep file table [sweep] has unknown keys {bad}; accepted: "
                         f"{', '.join(SWEEP_KEYS)} (configuration keys go in [fixed] or [grid])")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} must be a non-empty list of values")
        if key in fixed:
            raise ValueError(f"key {key!r} is both in fixed and grid; keep one")
    keys = sorted(grid)
    points = [dict(zip(keys, combo, strict=True))
              for combo in itertools.product(*(grid[k] for k in keys))]
    mode = meta.get("mode", "grid")
    if mode == "random":
        samples = positive_int("sweep.samples (mode = 'random')", meta.get("samples"))
        rng = numpy_generator(meta.get("seed", 0))
        take = rng.choice(len(points), size=min(samples, len(points)), replace=False)
        points = [points[i] for i in sorted(take)]
    elif mode != "grid":
        raise ValueError(f"sweep.mode must be 'grid' or 'random', got {mode!r}")
    configs = tuple({**fixed, **p} for p in points)
    group = positive_int("sweep.group", meta.get("group"), allow_none=True)
    return Sweep(configs=configs, job=str(meta.get("job", DEFAULT_JOB)), group=group,
                 factors=tuple(k for k in keys if len(grid[k]) > 1),
                 name=str(meta.get("name", "sweep")), settings=meta)


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Parse a ``.toml`` or ``.yaml``/``.yml`` sweep file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise OSError(f"sweep file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            tomllib = require("tomli", "zoo", "jacspec.zoo (.toml sweep files)")
        try:
            with open(path, "rb") as fh:
                spec = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"sweep file {path} is not valid TOML: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        yaml = require("yaml", "zoo", "jacspec.zoo (.yaml sweep files)", package="pyyaml")

        try:
            with open(path) as fh:
                spec = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            text = " ".join(str(exc).split())
            raise ValueError(f"sweep file {path} is not valid YAML: {text}") from None
        if not isinstance(spec, Mapping):
            raise ValueError(f"sweep file {path} must hold the tables sweep, fixed and grid; "
                             f"got a {type(spec).__name__}")
    else:
        raise ValueError(f"sweep file must end in .toml, .yaml or .yml, got {path.name}")
    sweep = expand(spec)
    if "name" not in sweep.settings:
        sweep = Sweep(configs=sweep.configs, job=sweep.job, group=sweep.group,
                      factors=sweep.factors, name=path.stem, settings=sweep.settings)
    return sweep


def resolve_job(job: str | Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
    """The function named by ``"module:function"`` (or ``job`` itself if callable); a module
    of :data:`MOVED_JOB_MODULES` (an older sweep file's path) is read at its new path."""
    if callable(job):
        return job
    if not isinstance(job, str) or ":" not in job:
        raise ValueError(f"job must be 'module:function' or a callable, got {job!r}")
    module, name = job.split(":", 1)
    module = MOVED_JOB_MODULES.get(module, module)
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"job {job!r} does not name a function")
    return fn


def validate_configs(job: str | Callable, configs: Sequence[Mapping[str, Any]]) -> None:
    """Call the job's ``validate_config`` (if it has one) on every configuration; the first
    invalid one raises its ValueError/TypeError, prefixed with its position and values."""
    check = getattr(resolve_job(job), "validate_config", None)
    if check is None:
        return
    for i, cfg in enumerate(configs):
        try:
            check(dict(cfg))
        except (ValueError, TypeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f"configuration {i + 1} of {len(configs)}"
            cls = TypeError if isinstance(exc, TypeError) else ValueError
            raise cls(f"{where}: {msg}; nothing was run") from None


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _init_worker(threads: int, driver: int) -> None:
    """Pool-worker start: set torch threads; exit when the driver process is gone (so a killed
    sweep leaves no workers behind)."""
    import threading

    _set_threads(threads)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(driver, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="jacspec-zoo-watchdog", daemon=True).start()


def run_chunk(job: str | Callable, configs: Sequence[dict[str, Any]],
              threads: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """Run several configurations in this process; each gives ``(hash, result)``.

    A job that raises yields ``{"error": "<type>: <message>"}`` instead of killing the task.
    """
    _set_threads(threads)
    fn = resolve_job(job)
    out = []
    for cfg in configs:
        t0 = time.perf_counter()
        try:
            result = dict(fn(dict(cfg)))
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
            logger.debug("job failed: %s", traceback.format_exc())
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result.setdefault("duration", time.perf_counter() - t0)
        out.append((config_hash(cfg), result))
    return out


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _default_group(n: int, workers: int) -> int:
    return max(1, min(4, math.ceil(n / (8 * workers))))


def run_sweep(
    sweep: Sweep | Sequence[Mapping[str, Any]],
    store: str | os.PathLike[str],
    *,
    job: str | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    group: int | None = None,
    threads: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    start_method: str | None = None,
    ray_timeout: float = RAY_START_TIMEOUT,
    keep_going: Callable[[], bool] | None = None,
) -> SweepSummary:
    """Run every configuration of ``sweep`` not yet done in ``store``.

    ``backend="local"``: a process pool of ``workers`` processes (default: CPU count), each
    with ``threads`` torch threads (default: CPU count // workers). ``backend="ray"``: tasks
    on the Ray cluster at ``address`` ("auto", "HOST:PORT", or None for a private local
    instance, started within ``ray_timeout`` seconds or TimeoutError/ConnectionError), one
    CPU per thread. ``group`` jobs go into one task. Finished runs are skipped;
    runs left ``running`` by an interrupted sweep are redone; failed ones only with
    ``retry_failed``. Only this (driver) process writes the store. ``start_method`` of the
    local pool: None picks "fork" for one-thread workers (they share the driver's imports)
    and "forkserver" (slow imports done once, then forked) otherwise.
    ``keep_going`` (local backend): called before each task is launched; once it returns
    False no further task starts, the running ones finish and the rest stay to do (a later
    call runs them), so a time budget leaves no worker idle.

    Every configuration is checked first (:func:`validate_configs`): an invalid one raises
    ValueError before the store is opened. A run that fails is recorded with its error (see
    ``SweepSummary.errors``); it does not stop the others.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    configs, job, group = _sweep_parts(sweep, job, group)
    validate_configs(job, configs)  # fail early on a bad job name or configuration
    if backend == "ray" and not (isinstance(ray_timeout, (int, float)) and ray_timeout > 0):
        raise ValueError(f"ray_timeout must be a positive number of seconds, got "
                         f"{ray_timeout!r}")
    ncpu = os.cpu_count() or 1
    workers = positive_int("workers", workers, allow_none=True) or ncpu
    threads = threads or max(1, ncpu // workers)
    t0 = time.perf_counter()
    with Store(store) as db:
        hashes = db.add(configs)
        by_hash = dict(zip(hashes, configs, strict=True))
        todo = db.todo(dict.fromkeys(hashes), retry_failed=retry_failed)
        status = db.statuses()
        previously_failed = 0 if retry_failed else sum(
            status.get(h) == "failed" for h in by_hash)
        group = group or _default_group(len(todo), workers)
        chunks = _chunks([by_hash[h] for h in todo], group)
        logger.info("sweep: %d configurations, %d to run in %d tasks (%s, %d workers)",
                    len(by_hash), len(todo), len(chunks), backend, workers)
        tally = _Tally(db, progress_bar(bool(progress and todo), total=len(todo), desc="zoo",
                                        unit="run"))
        launched = 0
        try:
            if chunks:
                launched = _launch(db, job, chunks, todo, tally.record, backend=backend,
                                   address=address, ray_timeout=ray_timeout, workers=workers,
                                   threads=threads, start_method=start_method,
                                   keep_going=keep_going)
        finally:
            if tally.bar is not None:
                tally.bar.close()
    ran = sum(len(c) for c in chunks[:launched])
    return SweepSummary(total=len(by_hash), skipped=len(by_hash) - len(todo), ran=ran,
                        done=tally.done, failed=tally.failed,
                        seconds=time.perf_counter() - t0, backend=backend, workers=workers,
                        group=group, errors=tally.errors, previously_failed=previously_failed)


def _sweep_parts(sweep: Sweep | Sequence[Mapping[str, Any]], job: str | None,
                 group: int | None) -> tuple[list[dict[str, Any]], str, int | None]:
    """The configurations, job and jobs per task of a :class:`Sweep` or a list of
    configurations (``job`` and ``group``, when given, win over the sweep's)."""
    if isinstance(sweep, Sweep):
        return list(sweep.configs), job or sweep.job, group or sweep.group
    return [dict(c) for c in sweep], job or DEFAULT_JOB, group


class _Tally:
    """Records each finished run in the store and counts done and failed ones (with each
    failure's error by config hash) on the progress bar."""

    def __init__(self, db: Store, bar: Any) -> None:
        self.db, self.bar = db, bar
        self.done = self.failed = 0
        self.errors: dict[str, str] = {}

    def record(self, results: list[tuple[str, dict[str, Any]]]) -> None:
        for h, result in results:
            self.db.finish(h, result)
            if result.get("error"):
                self.failed += 1
                self.errors[h] = str(result["error"])
            else:
                self.done += 1
        if self.bar is not None:
            self.bar.update(len(results))
            self.bar.set_postfix(failed=self.failed)


def _launch(db: Store, job: str, chunks: list[list[dict]], todo: list[str],
            record: Callable[[list[tuple[str, dict]]], None], *, backend: str,
            address: str | None, ray_timeout: float, workers: int, threads: int,
            start_method: str | None, keep_going: Callable[[], bool] | None) -> int:
    """Run ``chunks`` on the local pool (each run marked running when its task starts) or
    on Ray (started before any run is marked; then every run of ``todo`` is marked);
    returns how many chunks were launched."""
    with contextlib.ExitStack() as stack:
        ray = stack.enter_context(ray_session(address, ray_timeout)) \
            if backend == "ray" else None  # started before any run is marked
        if ray is None:  # each run is marked running when its task starts
            return _run_local(
                job, chunks, workers, threads, record, start_method, keep_going,
                started=lambda chunk: db.mark_running(config_hash(c) for c in chunk))
        db.mark_running(todo)
        run_ray(ray, run_chunk, job, chunks, threads, record, _chunk_error)
        return len(chunks)


def _chunk_error(chunk: list[dict[str, Any]], exc: BaseException) -> list[tuple[str, dict]]:
    msg = f"task failed: {type(exc).__name__}: {exc}"
    return [(config_hash(c), {"error": msg}) for c in chunk]


def _run_local(job: str, chunks: list[list[dict]], workers: int, threads: int,
               record: Callable[[list[tuple[str, dict]]], None],
               start_method: str | None = None,
               keep_going: Callable[[], bool] | None = None,
               started: Callable[[list[dict]], None] | None = None) -> int:
    """Run ``chunks`` on a pool of ``workers``, at most ``workers`` in flight, a new one
    launched while ``keep_going()`` (if given) is true and announced to ``started(chunk)``;
    returns how many were launched."""
    if workers == 1 and len(chunks) == 1:
        if keep_going is not None and not keep_going():
            return 0
        if started is not None:
            started(chunks[0])
        record(run_chunk(job, chunks[0], threads))
        return 1
    methods = mp.get_all_start_methods()
    if start_method is None:  # fork shares the driver's imports; safe with 1-thread workers
        start_method = "fork" if threads == 1 and "fork" in methods else (
            "forkserver" if "forkserver" in methods else "spawn")
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
    method = start_method
    ctx = mp.get_context(method)
    if method == "forkserver":
        module = job.split(":", 1)[0] if isinstance(job, str) else job.__module__
        warm = ["jacspec.zoo.run._warm"] if module.startswith("jacspec.") else []
        ctx.set_forkserver_preload([*warm, "jacspec.zoo.run.sweep", module])
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx,
                               initializer=_init_worker, initargs=(threads, os.getpid()))
    queue = iter(chunks)
    pending: dict[Any, list[dict]] = {}
    launched = 0

    def launch() -> None:
        nonlocal launched
        while len(pending) < workers and (keep_going is None or keep_going()):
            chunk = next(queue, None)
            if chunk is None:
                return
            if started is not None:
                started(chunk)
            pending[pool.submit(run_chunk, job, chunk, threads)] = chunk
            launched += 1

    try:
        launch()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                chunk = pending.pop(fut)
                try:
                    results = fut.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker fails its chunk only
                    results = _chunk_error(chunk, exc)
                record(results)
            launch()
    except BaseException:  # interrupted: drop queued tasks; their runs stay "running"
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return launched
