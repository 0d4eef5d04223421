"""Data forms through ``iter_batches``: ``[x, y]`` reads like ``(x, y)``, lists of batches stay
batches, one-shot iterators are refused up front by multi-pass analyses and accepted by
single-pass ones. Numbers are checked against per-example autograd Jacobians in float64."""

from __future__ import annotations

import cases
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import jacspec
from jacspec.data.batches import data_length, iter_batches, require_reiterable
from jacspec.data.datasets import DataSet

N = 10


@pytest.fixture(scope="module")
def mlp64() -> torch.nn.Module:
    return cases.build("mlp", dtype=torch.float64)


@pytest.fixture(scope="module")
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(cases.inputs("mlp", N, dtype=np.float64))
    return x, torch.from_numpy(cases.labels(N))


def reference_trace(model: torch.nn.Module, x: torch.Tensor, output: str = "softmax") -> float:
    """tr(M/n) = (1/n) sum_i ||J(x_i)||_F^2 from autograd, one example at a time."""
    jac = cases.reference_jacobians(model, x, output)
    return float(jac.pow(2).sum() / x.shape[0])


class CountingForward(torch.nn.Module):
    """Wraps a model and counts its forward calls (to show that nothing ran)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


# ----------------------------------------------------------------------------- [x, y]


def test_list_of_x_and_labels_reads_like_the_tuple(xy) -> None:
    x, y = xy
    for form in ([x, y], [x.numpy(), y.numpy()], [x, None]):
        batches = list(iter_batches(form, batch_size=4))
        assert [b[0].shape[0] for b in batches] == [4, 4, 2]
        got_x = torch.cat([b[0] for b in batches])
        assert torch.equal(got_x, x)
        if form[1] is None:
            assert all(b[1] is None for b in batches)
        else:
            assert torch.equal(torch.cat([b[1] for b in batches]), y)
        assert data_length(form) == N


def test_list_of_batches_stays_a_list_of_batches(xy) -> None:
    x, y = xy
    two_batches = [x[:6], x[6:]]  # same ndim: a list of two input batches
    got = list(iter_batches(two_batches))
    assert [b[0].shape for b in got] == [(6, 64), (4, 64)] and got[0][1] is None
    pairs = [(x[:6], y[:6]), (x[6:], y[6:])]
    got = list(iter_batches(pairs))
    assert [b[0].shape[0] for b in got] == [6, 4] and torch.equal(got[1][1], y[6:])
    lists = [[x[:6], y[:6]], [x[6:], y[6:]]]
    assert [b[0].shape[0] for b in iter_batches(lists)] == [6, 4]
    three = [x[:3], x[3:6], x[6:]]
    assert [b[0].shape[0] for b in iter_batches(three)] == [3, 3, 4]
    # labels whose length differs from x's first dim: not a pair, so two batches
    assert len(list(iter_batches([x, y[:5]]))) == 2
    assert data_length(two_batches) is None


def test_list_pair_jacobians_and_analyze_match_autograd(mlp64, xy) -> None:
    """On the old code ``[x, y]`` was two batches and the labels went into the model."""
    x, y = xy
    ref = cases.reference_jacobians(mlp64, x)
    got = jacspec.jacobians(mlp64, [x, y], dtype=torch.float64)
    assert got.shape == (N, 10, 64)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    result = jacspec.analyze(mlp64, [x, y], dtype=torch.float64, randomize=False)
    trace = float(np.sum(result.esds["input->output"].eigenvalues))
    assert trace == pytest.approx(reference_trace(mlp64, x), rel=1e-9)
    assert int(result.table.loc["input->output", "n"]) == N


# ----------------------------------------------------------------------------- one-shot iterators


def one_shot_forms(x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    return {
        "generator": ((x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4)),
        "iter(loader)": iter(loader),
        "map": map(lambda i: x[i : i + 4], range(0, N, 4)),
        "iter(list)": iter([(x, y)]),
    }


def test_require_reiterable_refuses_one_shot_iterators(xy) -> None:
    x, y = xy
    for form in one_shot_forms(x, y).values():
        with pytest.raises(TypeError, match=r"one-shot iterator.*analyze makes several passes.*"
                           r"pass a list, a DataLoader, a Dataset or arrays"):
            require_reiterable(form, "analyze")


class CountingDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.gets = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.gets += 1
        return self.x[i], self.y[i]


def test_require_reiterable_accepts_reiterable_data_without_iterating(xy) -> None:
    x, y = xy
    counting = CountingDataset(x, y)
    loader = DataLoader(counting, batch_size=4, shuffle=True)
    forms = [x, x.numpy(), (x, y), [x, y], [(x, y)], [x[:5], x[5:]], counting, loader,
             TensorDataset(x, y), DataSet(x.float(), y, 10, "t")]
    for form in forms:
        require_reiterable(form, "analyze")
    assert counting.gets == 0  # nothing was read, no loader iteration started


def test_multi_pass_analyses_refuse_a_generator_before_any_work(mlp64, xy) -> None:
    """On the old code these ran (part of) the work and then failed with "data is empty"."""
    x, y = xy
    model = CountingForward(mlp64)
    for call, what in (
        (lambda d: jacspec.analyze(model, d, method="slq", dtype=torch.float64), "analyze"),
        (lambda d: jacspec.analyze(model, d, layers="all", dtype=torch.float64), "analyze"),
        (lambda d: jacspec.analyze(model, d, dtype=torch.float64), "analyze"),
        (lambda d: jacspec.estimate_esd(model, d, method="slq", dtype=torch.float64),
         "estimate_esd"),
        (lambda d: jacspec.estimate_esd(model, d, dtype=torch.float64), "estimate_esd"),
    ):
        gen = ((x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4))
        with pytest.raises(TypeError, match=f"one-shot iterator.*{what} makes several passes"):
            call(gen)
        assert model.calls == 0
    # the same analyses run on the list of the same batches
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4)]
    est = jacspec.estimate_esd(mlp64, batches, method="exact", dtype=torch.float64)
    assert est.trace == pytest.approx(reference_trace(mlp64, x), rel=1e-9)


def test_single_pass_functions_keep_accepting_generators(mlp64, xy) -> None:
    x, y = xy
    ref = cases.reference_jacobians(mlp64, x)

    def gen():
        return ((x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4))

    torch.testing.assert_close(jacspec.jacobians(mlp64, gen(), dtype=torch.float64), ref,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jacspec.data_jacobian(mlp64, gen(), dtype=torch.float64),
                               ref.reshape(N, -1), rtol=1e-10, atol=1e-12)
    stacked = torch.cat([b.jac for b in jacspec.iter_jacobians(mlp64, gen(),
                                                               dtype=torch.float64)])
    torch.testing.assert_close(stacked, ref, rtol=1e-10, atol=1e-12)
    e = jacspec.esd(mlp64, gen(), dtype=torch.float64)
    assert float(np.sum(e.eigenvalues)) == pytest.approx(reference_trace(mlp64, x), rel=1e-9)
    g = jacspec.gram(mlp64, iter([(x, y)]), dtype=torch.float64)
    assert g.n == N
