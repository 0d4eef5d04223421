"""vjp_rows (jacspec.jacobian.vjp): the one batched backward.

Row ``j`` of example ``b`` is ``c_j^T d output_b / d leaf_b``: with identity cotangents the
per-example Jacobian, with projections ``P`` the product ``P J``, at any leaf (the input or a
hidden activation cut by a hook). References: ``torch.autograd.functional.jacobian`` one
example at a time, in float64.
"""

from __future__ import annotations

import re
from pathlib import Path

import cases
import pytest
import torch
from torch import nn

from jacspec.jacobian.vjp import VJP_METHODS, replicate, vjp_rows

PACKAGE = Path(__file__).resolve().parents[2] / "jacspec"
N = 3


def _x(arch: str, n: int = N) -> torch.Tensor:
    return torch.from_numpy(cases.inputs(arch, n, seed=1)).double()


def _rows(model: nn.Module, x: torch.Tensor, cot: torch.Tensor, method: str) -> torch.Tensor:
    """vjp_rows at the input, the forward run on C copies for ``replicate``."""
    xin = replicate(x, cot.shape[0]) if method == "replicate" else x
    leaf = xin.detach().clone().requires_grad_(True)
    return vjp_rows(model(leaf), leaf, cot, method)


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return cases.reference_jacobians(model, x, "logits")  # (n, k, *shape)


@pytest.mark.parametrize("method", VJP_METHODS)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])  # the CNN has BatchNorm and Dropout (eval)
def test_identity_cotangents_give_the_jacobian(arch: str, method: str) -> None:
    model = cases.build(arch, dtype=torch.float64)
    x = _x(arch)
    ref = _reference(model, x)
    k = ref.shape[1]
    got = _rows(model, x, torch.eye(k, dtype=torch.float64), method)
    assert got.shape == ref.shape == (N, k, *x.shape[1:])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", VJP_METHODS)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_projection_cotangents_give_p_times_j(arch: str, method: str) -> None:
    model = cases.build(arch, dtype=torch.float64)
    x = _x(arch)
    ref = _reference(model, x)
    k = ref.shape[1]
    p = torch.randn(4, k, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = _rows(model, x, p, method)
    want = torch.einsum("ck,nk...->nc...", p, ref)  # P J_i for every example
    assert got.shape == (N, 4, *x.shape[1:])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", VJP_METHODS)
def test_rows_at_a_hidden_leaf_cut_by_a_hook(method: str) -> None:
    """Layer rows: the leaf is a hidden activation ``h`` fed downstream by a forward hook;
    the rows are ``d logits / d h``, the Jacobian of the rest of the network at ``h``."""
    model = cases.build("mlp", dtype=torch.float64)
    first, rest = model.net[0], model.net[1:]
    x = _x("mlp")
    k = 10
    xin = replicate(x, k) if method == "replicate" else x
    held: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        held["leaf"] = out.detach().requires_grad_(True)
        return held["leaf"].clone()

    handle = first.register_forward_hook(hook)
    try:
        out = model(xin)
    finally:
        handle.remove()
    got = vjp_rows(out, held["leaf"], torch.eye(k, dtype=torch.float64), method)
    h = first(x).detach()
    ref = torch.stack([torch.autograd.functional.jacobian(lambda t: rest(t)[0], h[i : i + 1])[:, 0]
                       for i in range(N)])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", VJP_METHODS)
def test_retain_graph_and_create_graph(method: str) -> None:
    model = cases.build("mlp", dtype=torch.float64)
    x = _x("mlp")
    eye = torch.eye(10, dtype=torch.float64)
    xin = replicate(x, 10) if method == "replicate" else x
    leaf = xin.detach().clone().requires_grad_(True)
    out = model(leaf)
    first = vjp_rows(out, leaf, eye, method, retain_graph=True)
    again = vjp_rows(out, leaf, eye, method)  # the graph was kept for this second call
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    with pytest.raises(RuntimeError):  # ... and freed after it
        vjp_rows(out, leaf, eye, method)
    # create_graph: the rows are differentiable; d/dx sum(J) against autograd's own
    leaf = xin.detach().clone().requires_grad_(True)
    rows = vjp_rows(model(leaf), leaf, eye, method, create_graph=True)
    (got,) = torch.autograd.grad(rows.sum(), leaf)
    if method == "replicate":  # copy j of the batch carried row j: add the copies up
        got = got.view(10, N, *x.shape[1:]).sum(0)
    x0 = x[:1].detach().clone().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda t: model(t)[0], x0, create_graph=True)
    (want,) = torch.autograd.grad(jac.sum(), x0)
    torch.testing.assert_close(got[:1], want, rtol=1e-10, atol=1e-12)


def test_bad_cotangents_and_method_are_one_sentence() -> None:
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out = x @ torch.ones(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cotangents must have shape \(C, 4\)"):
        vjp_rows(out, x, torch.eye(3, dtype=torch.float64), "loop")
    with pytest.raises(ValueError, match="method"):
        vjp_rows(out, x, torch.eye(4, dtype=torch.float64), "vmap")


def test_the_batched_backward_has_one_home() -> None:
    """Cotangent-driven backward passes (``grad_outputs=``, ``is_grads_batched``, a loop's
    ``retain_graph=c < k - 1``) are written in jacspec/jacobian/vjp.py only: the engine,
    layer rows, sketch and factored route all call vjp_rows."""
    pattern = re.compile(r"grad_outputs=|is_grads_batched=|retain_graph=\w+ <")
    found = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if pattern.search(p.read_text()))
    assert found == ["jacobian/vjp.py"], found
