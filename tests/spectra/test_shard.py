"""The sharded dual Gram: shards of examples summed in a fixed order give the local Gram.

Fast tests run the shard tasks in this process (``backend="local"``, no Ray) and check the
reduction exactly; one module-scoped local Ray (2 CPUs) checks that Ray workers give the
local Gram to 1e-10 relative in float64, and the same eigenvalues. The device tests check
that ``device=`` is honoured end to end on a CPU-only machine.
"""

from __future__ import annotations

import sys

import cases
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import esd
from jacspec.spectra.gram import Gram, gram, gram_from_source, sum_grams
from jacspec.spectra.shard import shard_data, shard_ranges, sharded_esd, sharded_gram

F64 = torch.float64


def _model(seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5, bias=bias), nn.Tanh(), nn.Linear(5, 4)).to(F64).eval()


def _x(n: int = 23, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 6)))


def _reference_eigenvalues(model: nn.Module, x: torch.Tensor, output: str) -> np.ndarray:
    """Nonzero-spectrum reference: eigenvalues of the primal J J^T from per-example autograd
    Jacobians (independent of the engine and of the Gram code), descending."""
    J = cases.reference_jacobians(model, x, output).reshape(x.shape[0], -1)
    return np.sort(np.linalg.eigvalsh((J @ J.T).numpy()))[::-1]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------- sharding logic


def test_shard_ranges_are_contiguous_ordered_and_balanced() -> None:
    for n, s in ((23, 3), (10, 10), (7, 1), (5, 4)):
        r = shard_ranges(n, s)
        assert len(r) == s and r[0][0] == 0 and r[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(r, r[1:], strict=False))
        sizes = [b - a for a, b in r]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert shard_ranges(23, 3) == [(0, 8), (8, 16), (16, 23)]
    with pytest.raises(ValueError, match="shards=4 exceeds the 3 examples"):
        shard_ranges(3, 4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="shards must be a positive integer"):
            shard_ranges(5, bad)


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_local_shards_sum_exactly_to_the_parts_and_match_the_local_gram(output: str) -> None:
    model, x = _model(), _x()
    g = sharded_gram(model, x, shards=3, backend="local", output=output)
    # the reduction, re-done by hand: each shard's dual Gram, added in shard order
    parts = [gram_from_source(JacobianSource.from_model(model, x[a:b], output=output),
                              side="dual") for a, b in ((0, 8), (8, 16), (16, 23))]
    by_hand = parts[0].matrix.copy()
    for p in parts[1:]:
        by_hand += p.matrix
    assert np.array_equal(g.matrix, by_hand)
    assert g.matrix.dtype == np.float64 and g.side == "dual" and g.n == 23
    assert g.deflated == (output == "softmax")
    local = gram(model, x, side="dual", output=output)
    assert g.matrix.shape == local.matrix.shape
    assert g.settings.get("route") == local.settings.get("route")
    assert _rel(g.matrix, local.matrix) < 1e-12
    assert (g.k, g.input_shape, g.output, g.dtype) == (local.k, local.input_shape,
                                                       local.output, local.dtype)
    assert g.settings["shards"] == {"count": 3, "backend": "local",
                                    "ranges": [[0, 8], [8, 16], [16, 23]]}
    assert g.settings["source"]["n"] == 23
    if output == "softmax":  # the measured class-sum residual adds up over shards
        assert g.class_sum_residual2 == pytest.approx(sum(p.class_sum_residual2 for p in parts),
                                                      rel=1e-12, abs=1e-30)
    e = sharded_esd(model, x, shards=3, backend="local", output=output, scale="none")
    ref = _reference_eigenvalues(model, x, output)
    top = ref[: e.rank]
    assert _rel(np.asarray(e.eigenvalues)[: e.rank], top) < 1e-10
    assert e.settings["shards"]["count"] == 3


def test_every_indexable_data_form_gives_the_same_gram() -> None:
    model, x = _model(), _x(20)
    y = torch.arange(20) % 4
    want = sharded_gram(model, x, shards=3, backend="local").matrix

    class DataSet:  # a jacspec-like data set: .x and .y
        def __init__(self, x, y):
            self.x, self.y = x, y

    forms = {
        "numpy": x.numpy(),
        "pair": (x, y),
        "dataset-like": DataSet(x, y),
        "Dataset": TensorDataset(x, y),
        "DataLoader": DataLoader(TensorDataset(x, y), batch_size=6, shuffle=False),
        "list of batches": [(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)],
    }
    for name, data in forms.items():
        g = sharded_gram(model, data, shards=3, backend="local")
        assert g.n == 20, name
        assert _rel(g.matrix, want) < 1e-13, name
    # a list of 5 batches is cut between batches: 2 + 2 + 1 batches
    pieces = shard_data(forms["list of batches"], 3)
    assert [(a, b) for _, a, b in pieces] == [(0, 8), (8, 16), (16, 20)]


def test_data_without_indices_and_the_primal_side_are_refused() -> None:
    model, x = _model(), _x(12)
    y = torch.zeros(12, dtype=torch.long)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    with pytest.raises(TypeError, match="DataLoader cannot be sharded .*shuffled.*shuffle=False"):
        sharded_gram(model, shuffled, shards=2, backend="local")
    with pytest.raises(TypeError, match="generator cannot be sharded"):
        sharded_gram(model, (b for b in [x[:6], x[6:]]), shards=2, backend="local")
    with pytest.raises(ValueError, match="side='primal' cannot be sharded.*not a sum over"):
        sharded_gram(model, x, shards=2, backend="local", side="primal")
    with pytest.raises(ValueError, match="shards=13 exceeds the 12 examples"):
        sharded_gram(model, x, shards=13, backend="local")
    with pytest.raises(ValueError, match="backend"):
        sharded_gram(model, x, shards=2, backend="dask")
    with pytest.raises(ValueError, match="cpus_per_shard"):
        sharded_gram(model, x, shards=2, cpus_per_shard=0)


def test_sum_grams_refuses_primal_and_mismatched_parts() -> None:
    model, x = _model(), _x(12)
    dual = gram(model, x, side="dual")
    with pytest.raises(ValueError, match="primal Gram; only dual Grams"):
        sum_grams([dual, gram(model, x[:5], side="primal")])
    with pytest.raises(ValueError, match="does not match parts\\[0\\]"):
        sum_grams([dual, gram(model, x, side="dual", output="logits")])
    with pytest.raises(ValueError, match="parts is empty"):
        sum_grams([])
    with pytest.raises(TypeError, match="must be a Gram"):
        sum_grams([dual, dual.matrix])
    assert isinstance(sum_grams([dual]), Gram)


def test_torchscript_models_ship_and_the_users_model_is_unchanged() -> None:
    model, x = _model(seed=3, bias=False), _x(15)
    model.train()  # the engine evaluates a copy's forward in the user's mode; mode is kept
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    g = sharded_gram(model, x, shards=2, backend="local")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(state, torch.random.get_rng_state())
    scripted = torch.jit.script(model.eval())
    gs = sharded_gram(scripted, x, shards=2, backend="local")
    assert _rel(gs.matrix, gram(scripted, x, side="dual").matrix) < 1e-12
    assert g.n == gs.n == 15


# ----------------------------------------------------------------------- device=


def test_device_cpu_is_honoured_and_cuda_without_cuda_is_one_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this test checks the CPU-only behaviour")
    model, x = _model(), _x(12)
    base = esd(model, x).eigenvalues
    assert np.array_equal(esd(model, x, device="cpu").eigenvalues, base)
    assert gram(model, x, device="cpu").settings["jacobian"]["device"] == "cpu"
    g = sharded_gram(model, x, shards=2, backend="local", device="cpu")
    assert g.settings["jacobian"]["device"] == "cpu"
    from jacspec.analysis import analyze
    from jacspec.spectra.estimate import estimate_esd

    calls = {
        "gram": lambda: gram(model, x, device="cuda"),
        "esd": lambda: esd(model, x, device="cuda"),
        "sharded_gram": lambda: sharded_gram(model, x, shards=2, backend="local",
                                             device="cuda"),
        "estimate_esd": lambda: estimate_esd(model, x, device="cuda", method="slq"),
        "analyze": lambda: analyze(model, x, device="cuda", randomize=False),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "CUDA is not available" in msg and "'cpu'" in msg, (name, msg)
        assert len(msg.splitlines()) == 1, (name, msg)


# ----------------------------------------------------------------------- on a local Ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module, started through the shared bounded start-up.

    Without token authentication: a new local Ray otherwise writes ``~/.ray/auth_token``,
    after which clients of other clusters on this machine (tests/zoo/test_zoo_ray.py's
    ``ray start`` head) fail to authenticate unless they set ``RAY_AUTH_MODE=token``."""
    from jacspec._util.ray import ray_session

    if ray.is_initialized():
        ray.shutdown()
    env = pytest.MonkeyPatch()
    env.setenv("RAY_AUTH_MODE", "disabled")
    try:
        with ray_session(None, 120, hint="use backend='local'", num_cpus=2) as r:
            yield r
    finally:
        env.undo()


def test_ray_shards_equal_the_local_gram(local_ray) -> None:
    model, x = _model(seed=5), _x(41, seed=2)
    local = gram(model, x, side="dual")
    g = sharded_gram(model, x, shards=3, backend="ray")
    assert local_ray.is_initialized()  # a Ray started by the caller is left running
    assert _rel(g.matrix, local.matrix) < 1e-10
    assert g.n == 41 and g.side == "dual" and g.deflated
    assert g.settings["shards"]["backend"] == "ray"
    assert g.settings["shards"]["ranges"] == [[0, 14], [14, 28], [28, 41]]
    # the same task run here: Ray's parts add up to exactly the local backend's sum
    assert np.array_equal(g.matrix, sharded_gram(model, x, shards=3, backend="local").matrix)
    e_ray = sharded_esd(model, x, shards=3, backend="ray", scale="none")
    e_loc = esd(model, x, side="dual", scale="none")
    assert e_ray.rank == e_loc.rank
    r = e_loc.rank
    assert _rel(np.asarray(e_ray.eigenvalues)[:r], np.asarray(e_loc.eigenvalues)[:r]) < 1e-10
    ref = _reference_eigenvalues(model, x, "softmax")
    assert _rel(np.asarray(e_ray.eigenvalues)[:r], ref[:r]) < 1e-10
    scripted = torch.jit.script(model)
    g_script = sharded_gram(scripted, x, shards=2, backend="ray")
    assert _rel(g_script.matrix, gram(scripted, x, side="dual").matrix) < 1e-10


class Picky(nn.Module):
    """Fails on inputs with a big first entry (so on one shard only)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if bool((t[:, 0] > 100).any()):
            raise ValueError("input out of range")
        return self.net(t)


def test_a_failing_shard_names_itself_in_one_line(local_ray, monkeypatch) -> None:
    x = _x(12)
    x[8, 0] = 1000.0
    with pytest.raises(ValueError) as info:
        sharded_gram(Picky(), x[1:], shards=2, backend="local")  # probe passes, shard 1 fails
    assert "input out of range" in str(info.value)
    # this test module is not importable on the workers: its classes cannot be unpickled
    with pytest.raises(RuntimeError) as info:
        sharded_gram(Picky(), x[1:], shards=2, backend="ray")
    msg = str(info.value)
    assert "shard 0 (examples 0:6) failed on a Ray worker: " in msg
    assert "No module named" in msg and "must be importable on the Ray workers" in msg
    assert len(msg.splitlines()) == 1, msg
    import ray.cloudpickle as cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # now shipped by value, like __main__
    try:
        with pytest.raises(ValueError) as info:
            sharded_gram(Picky(), x[1:], shards=2, backend="ray")
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    msg = str(info.value)
    assert "shard 1 (examples 6:11) failed on a Ray worker: " in msg and "out of range" in msg
    assert len(msg.splitlines()) == 1, msg


def test_a_local_ray_is_private_and_a_failed_start_is_one_line(monkeypatch) -> None:
    """``ray_address=None`` starts a private instance (``address="local"``), never joining a
    cluster someone else started on this machine; a failed start names backend='local'."""
    from jacspec._util.ray import ray_session

    seen: dict = {}

    def init(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("Failed to start the GCS server")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(ConnectionError) as info:
        with ray_session(None, 5, hint="use backend='local'"):
            pass
    assert seen["address"] == "local"
    msg = str(info.value)
    assert msg == ("Ray could not start within 5 s: RuntimeError: Failed to start the GCS "
                   "server; use backend='local'")
    with pytest.raises(ConnectionError, match="use backend='local'"):
        sharded_gram(_model(), _x(6), shards=2, backend="ray", ray_timeout=5)
