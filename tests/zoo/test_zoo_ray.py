"""The same small sweep gives identical metrics under the local and the Ray backend; a Ray
that cannot start ends in one clear line instead of a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jacspec.cli.main import main
from jacspec.zoo.run.store import Store, load_results
from jacspec.zoo.run.sweep import run_sweep

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]

CONFIGS = [{"dataset": "digits", "n_train": 120, "n_test": 100, "width": w, "depth": 1,
            "activation": act, "max_steps": 40, "batch_size": 32, "seed": 3,
            "metrics": ["accuracy", "jacobian_norm", "baselines"], "checkpoints": 2,
            "curve_metrics": ["accuracy", "baselines"]}
           for w, act in ((16, "relu"), (24, "tanh"), (16, "hard_sigmoid"))]
TIMINGS = {"train_seconds", "duration", "started", "finished"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        # Ray's daemons and workers all live in the process group this fixture started
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _metrics(store: Path):
    df = load_results(store).set_index("config_hash").sort_index()
    return df.drop(columns=[c for c in df.columns if c in TIMINGS or c == "attempts"])


def test_local_and_ray_backends_agree(tmp_path: Path, ray_address: str) -> None:
    local = tmp_path / "local.sqlite"
    s1 = run_sweep(CONFIGS, local, backend="local", workers=2, threads=1, group=2,
                   progress=False)
    assert (s1.done, s1.failed) == (3, 0)
    remote = tmp_path / "ray.sqlite"
    deadline = time.time() + 120
    while True:  # the head node may still be starting
        try:
            s2 = run_sweep(CONFIGS, remote, backend="ray", address=ray_address, threads=1,
                           group=2, progress=False)
            break
        except (ConnectionError, RuntimeError, TimeoutError):
            if time.time() > deadline:
                raise
            time.sleep(2)
    assert (s2.done, s2.failed) == (3, 0), load_results(remote, status=None)["error"].tolist()
    a, b = _metrics(local), _metrics(remote)
    assert list(a.index) == list(b.index)
    assert set(a.columns) == set(b.columns)
    for col in ("train_accuracy", "test_accuracy", "gap", "test_jacobian_norm",
                "dist_init", "weight_norm_sum", "epochs"):
        assert (a[col] == b[col]).all(), col
    assert a.equals(b[a.columns])


@pytest.fixture
def broken_ray(monkeypatch: pytest.MonkeyPatch):
    """``ray.init`` replaced by one that hangs (until the test ends) or raises; no real Ray."""
    release = threading.Event()
    calls: list[str] = []

    def install(mode: str) -> list[str]:
        def init(*args, **kwargs):
            calls.append("init")
            if mode == "hang":
                release.wait(120)  # what a local Ray that cannot start does, in miniature
                calls.append("init returned")
            raise RuntimeError("Failed to start the GCS server: address already in use")

        monkeypatch.setattr(ray, "init", init)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
        return calls

    yield install
    release.set()


@pytest.mark.parametrize("mode", ["hang", "raise"])
def test_a_ray_that_cannot_start_fails_fast_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], broken_ray, mode: str) -> None:
    calls = broken_ray(mode)
    cfg = tmp_path / "s.toml"
    cfg.write_text('[fixed]\ndataset = "digits"\nmax_steps = 2\nmetrics = ["accuracy"]\n'
                   "[grid]\nwidth = [8, 12]\n")
    store = tmp_path / "z.sqlite"
    rc = main(["zoo", "run", str(cfg), "--store", str(store), "--backend", "ray",
               "--ray-timeout", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "Ray could not start within 1 s" in err and "use --backend local" in err
    if mode == "raise":
        assert "GCS server" in err
    assert calls[0] == "init" and "shutdown" in calls
    assert "init returned" not in calls  # the sweep did not wait for the hung start
    with Store(store, readonly=True) as st:  # no run was marked as started
        assert st.counts()["pending"] == 2 and st.counts()["running"] == 0
