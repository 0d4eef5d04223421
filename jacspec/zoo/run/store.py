"""Crash-safe results store for model-zoo sweeps.

One SQLite file (WAL journal, one transaction per state change) holds one row per
run: ``config_hash`` (SHA-256 of the canonical JSON of the configuration), the
configuration, ``status`` in {pending, running, done, failed}, timings, attempts
and every scalar metric (JSON). A second table holds metrics measured at
checkpoints during training (one row per run and step). Arrays (ESDs) and model
checkpoints are files in ``<store>.files/<config_hash>/``, written atomically
before the row that refers to them is committed. Only the sweep driver writes.

Model checkpoints are jacspec checkpoints (:func:`jacspec.models.builders.save_checkpoint`: the
architecture spec and the weights, read with ``weights_only=True``), so
``jacspec analyze <store>.files/<hash>/checkpoint.pt`` reads them. Stores written before
used ``{"state_dict", "config"}``; :meth:`Store.model` still reads those and
:meth:`Store.migrate_checkpoints` rewrites them in the jacspec format.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable as _jsonable

logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "done", "failed")

#: Result columns that use the test labels, define the gap or describe training (what
#: :func:`jacspec.zoo.run.train.run_job` and the store record besides metrics): never
#: predictors of the gap.
NON_PREDICTORS = ("gap", "loss_gap", "train_accuracy", "test_accuracy", "train_loss",
                  "test_loss", "epochs", "steps", "train_seconds", "converged", "full_batch",
                  "duration", "attempts")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    config_hash TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    duration REAL,
    host TEXT,
    error TEXT,
    metrics TEXT
);
CREATE TABLE IF NOT EXISTS curves (
    config_hash TEXT NOT NULL,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (config_hash, step)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


def canonical_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a configuration: sorted keys, no spaces."""
    return json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``config``."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Store:
    """Results of one or more sweeps in an SQLite file plus a folder of arrays.

    Open with ``Store(path)``; use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise OSError(f"store {self.path} does not exist")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self._con = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        if not readonly:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(_SCHEMA)
        self.files = Path(str(self.path) + ".files")

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                con.execute(sql, params)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- writing (driver only) -------------------------------------------------------------
    def add(self, configs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Register configurations (pending unless already present); returns their hashes."""
        now = time.time()
        hashes, rows = [], []
        for cfg in configs:
            h = config_hash(cfg)
            hashes.append(h)
            rows.append(("INSERT OR IGNORE INTO runs (config_hash, config, status, created) "
                         "VALUES (?, ?, 'pending', ?)", (h, canonical_json(cfg), now)))
        self._tx(rows)
        return hashes

    def todo(self, hashes: Iterable[str], *, retry_failed: bool = False) -> list[str]:
        """Hashes among ``hashes`` that still need running (pending, interrupted, failed?)."""
        wanted = ("pending", "running", "failed") if retry_failed else ("pending", "running")
        status = self.statuses()
        return [h for h in hashes if status.get(h) in wanted]

    def discard(self, hashes: Iterable[str]) -> int:
        """Remove runs (any status) with their curves and array files, e.g. after a design
        change leaves them out; returns how many runs were removed."""
        hashes = [str(h) for h in hashes]
        present = [h for h in hashes if self._con.execute(
            "SELECT 1 FROM runs WHERE config_hash=?", (h,)).fetchone()]
        self._tx([(sql, (h,)) for h in present for sql in (
            "DELETE FROM curves WHERE config_hash=?", "DELETE FROM runs WHERE config_hash=?")])
        for h in present:
            folder = self.files / h
            if folder.is_dir():
                shutil.rmtree(folder)
        return len(present)

    def mark_running(self, hashes: Iterable[str]) -> None:
        now, host = time.time(), socket.gethostname()
        self._tx([("UPDATE runs SET status='running', attempts=attempts+1, started=?, host=?, "
                   "error=NULL WHERE config_hash=? AND status!='done'", (now, host, h))
                  for h in hashes])

    def finish(self, h: str, result: Mapping[str, Any]) -> None:
        """Record one finished job: ``result`` has ``metrics`` (dict of scalars), optional
        ``curves`` (list of dicts with ``step``), ``arrays`` (name -> ndarray), ``checkpoint``
        (bytes), ``duration`` (s) and ``error`` (str: the run failed)."""
        folder = self.files / h
        arrays = result.get("arrays") or {}
        ckpt = result.get("checkpoint")
        if arrays or ckpt is not None:
            folder.mkdir(parents=True, exist_ok=True)
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(arr), allow_pickle=False)
            _atomic_write(folder / f"{name}.npy", buf.getvalue())
        if ckpt is not None:
            _atomic_write(folder / "checkpoint.pt", bytes(ckpt))
        error = result.get("error")
        status = "failed" if error else "done"
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM curves WHERE config_hash=?", (h,)),
        ]
        for point in result.get("curves") or []:
            stmts.append(("INSERT INTO curves (config_hash, step, metrics) VALUES (?, ?, ?)",
                          (h, int(point["step"]), json.dumps(_jsonable(point)))))
        stmts.append((
            "UPDATE runs SET status=?, finished=?, duration=?, error=?, metrics=? "
            "WHERE config_hash=?",
            (status, time.time(), result.get("duration"), error,
             json.dumps(_jsonable(result.get("metrics") or {})), h)))
        self._tx(stmts)

    # -- reading ---------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return dict(self._con.execute("SELECT config_hash, status FROM runs").fetchall())

    def counts(self) -> dict[str, int]:
        """``{"total", "done", "failed", "pending", "running"}`` (running = interrupted or live)."""
        out = {s: 0 for s in STATUSES}
        for status, n in self._con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        out["total"] = sum(out[s] for s in STATUSES)
        return {"total": out["total"], "done": out["done"], "failed": out["failed"],
                "pending": out["pending"], "running": out["running"]}

    def integrity_ok(self) -> bool:
        return self._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def runs(self, *, status: str | None = "done") -> pd.DataFrame:
        """One row per run: ``config_hash``, ``status``, timings, config keys as columns and
        metric keys as columns (configuration keys win name clashes; metrics get ``m_``)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        sql = ("SELECT config_hash, config, status, attempts, started, finished, duration, "
               "error, metrics FROM runs")
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status=?"
            params = (status,)
        rows = []
        for h, cfg, st, att, started, finished, dur, err, met in self._con.execute(sql, params):
            row: dict[str, Any] = {"config_hash": h, "status": st, "attempts": att,
                                   "started": started, "finished": finished,
                                   "duration": dur, "error": err}
            config = json.loads(cfg)
            for k, v in config.items():
                row[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
            for k, v in (json.loads(met) if met else {}).items():
                row[f"m_{k}" if k in row else k] = np.nan if v is None else v
            rows.append(row)
        return pd.DataFrame(rows)

    def configs(self) -> dict[str, dict[str, Any]]:
        return {h: json.loads(c) for h, c in self._con.execute(
            "SELECT config_hash, config FROM runs")}

    def curves(self) -> pd.DataFrame:
        """Metrics at checkpoints: one row per (run, step), columns ``config_hash``, ``step``
        and the metric names."""
        rows = []
        for h, step, met in self._con.execute(
                "SELECT config_hash, step, metrics FROM curves ORDER BY config_hash, step"):
            row = {k: (np.nan if v is None else v) for k, v in json.loads(met).items()}
            row.update(config_hash=h, step=step)
            rows.append(row)
        return pd.DataFrame(rows)

    def array(self, h: str, name: str) -> np.ndarray:
        path = self.files / h / f"{name}.npy"
        if not path.exists():
            raise OSError(f"no array {name!r} stored for run {h}")
        return np.load(path, allow_pickle=False)

    def errors(self) -> dict[str, str]:
        """Config hash -> recorded error of every failed run."""
        return dict(self._con.execute(
            "SELECT config_hash, COALESCE(error, '') FROM runs WHERE status='failed' "
            "ORDER BY finished").fetchall())

    def failures(self) -> list[dict[str, Any]]:
        """Every failed run: ``config_hash``, ``attempts``, ``error`` and ``config``."""
        return [{"config_hash": h, "attempts": att, "error": err or "", "config": json.loads(c)}
                for h, att, err, c in self._con.execute(
                    "SELECT config_hash, attempts, error, config FROM runs "
                    "WHERE status='failed' ORDER BY finished")]

    def checkpoint_path(self, h: str) -> Path:
        """Where the model checkpoint of run ``h`` is (or would be) stored."""
        return self.files / h / "checkpoint.pt"

    def model(self, h: str) -> Any:
        """The trained network of run ``h`` (eval mode), from its stored checkpoint: a jacspec
        checkpoint, or the older zoo format ``{"state_dict", "config"}`` (rebuilt from the
        run's configuration with :func:`jacspec.zoo.run.train.make_model`)."""
        from jacspec.models.builders import load_checkpoint

        path = self.checkpoint_path(h)
        if not path.is_file():
            raise OSError(f"no checkpoint stored for run {h} (set save_checkpoint = true)")
        legacy = _legacy_checkpoint(path)
        if legacy is None:
            return load_checkpoint(path)[0]
        return _legacy_model(legacy)[0]

    def migrate_checkpoints(self) -> list[Path]:
        """Rewrite every checkpoint of the older zoo format as a jacspec checkpoint (same
        weights; the architecture spec rebuilt from the run's configuration); returns the
        rewritten paths. Files already in the jacspec format are left as they are."""
        from jacspec.models.builders import save_checkpoint

        rewritten = []
        for h in sorted(self.configs()):
            path = self.checkpoint_path(h)
            if not path.is_file():
                continue
            legacy = _legacy_checkpoint(path)
            if legacy is None:
                continue
            model, spec = _legacy_model(legacy)
            save_checkpoint(path, model, spec)
            rewritten.append(path)
        return rewritten


def _legacy_checkpoint(path: Path) -> dict[str, Any] | None:
    """The payload of an older zoo checkpoint (``{"state_dict", "config"}``), or None when
    ``path`` holds something else (a jacspec checkpoint)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure is one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({first})"
                         ) from None
    if (isinstance(obj, Mapping) and "format" not in obj and "state_dict" in obj
            and isinstance(obj.get("config"), Mapping)):
        return dict(obj)
    return None


def _legacy_model(payload: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, build spec) of an older zoo checkpoint's payload."""
    from jacspec.zoo.run.train import load_data, make_model, model_spec

    config = dict(payload["config"])
    train_set, _ = load_data(config)
    model = make_model(config, train_set)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), model_spec(config, train_set)


def load_results(path: str | os.PathLike[str], *, status: str | None = "done") -> pd.DataFrame:
    """Runs of the store at ``path`` as a DataFrame (see :meth:`Store.runs`)."""
    with Store(path, readonly=True) as store:
        return store.runs(status=status)
