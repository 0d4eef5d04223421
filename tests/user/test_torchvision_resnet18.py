"""A torchvision ``resnet18`` through every entry point (issue 21).

torchvision itself: the release that matches torch 2.13.0, 0.28.0, which ``make`` installs
into ``.venv/torchvision-0.28.0`` (see :func:`_import_torchvision_resnet18` for why it is
kept off ``sys.path``; 0.29.1 needs torch 2.14.1). Where it does not import, the test uses
``resnet18_like``: the
same modules, shapes and forward as ``torchvision.models.resnet18`` (7x7/2 stem, 3x3/2
max-pool, four stages of two BasicBlocks with 1x1/2 projection shortcuts, adaptive average
pool, fc), with torchvision's initialisation. The case's id says which ran. References are
autograd's per-example Jacobians in float64 (``cases.reference_jacobians``).
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import cases
import numpy as np
import pytest
import torch
from torch import nn

import jacspec


class Block(nn.Module):
    """torchvision.models.resnet.BasicBlock (expansion 1)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18Like(nn.Module):
    """torchvision.models.resnet18(num_classes=...) re-expressed module for module."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        stages, cin = [], 64
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(Block(cin, w, 1 if i == 0 else 2), Block(w, w)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


#: Where ``make`` puts torchvision 0.28.0 (the release for torch 2.13.0), off ``sys.path`` so
#: that no other package imports it.
TORCHVISION = Path(__file__).resolve().parents[2] / ".venv" / "torchvision-0.28.0"


def _import_torchvision_resnet18() -> Callable[..., nn.Module]:
    """``torchvision.models.resnet18`` from the real package.

    PyPI's 0.28.0 is a CUDA build whose C extension (nms, roi_align) cannot load beside the
    CPU build of torch, and its ``_meta_registrations`` then fails at import ("operator
    torchvision::nms does not exist"). The models are pure Python and never call those
    operators, so that one module is replaced by an empty one before the import.
    """
    if not TORCHVISION.is_dir():
        from torchvision.models import resnet18  # an installed torchvision, as it is

        return resnet18
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    sys.path.append(str(TORCHVISION))
    try:
        from torchvision.models import resnet18
    finally:
        sys.path.remove(str(TORCHVISION))
    return resnet18


def _resnet18() -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    try:
        resnet18 = _import_torchvision_resnet18()

        return resnet18(num_classes=10), "torchvision"
    except (ImportError, RuntimeError, OSError):
        return ResNet18Like(10), "resnet18_like"


def make_resnet18() -> nn.Module:
    """A factory for the CLI (``MODULE:make_resnet18``)."""
    return _resnet18()[0]


MODEL, SOURCE = _resnet18()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    m = MODEL.double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        gen = torch.Generator().manual_seed(1)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1, generator=gen)
                mod.running_var.uniform_(0.5, 1.5, generator=gen)
    return m


X = torch.from_numpy(np.random.default_rng(3).standard_normal((5, 3, 32, 32)))
Y = torch.tensor([0, 3, 7, 1, 9])


def test_parameter_count_is_torchvisions(model: nn.Module) -> None:
    # torchvision.models.resnet18(num_classes=10): 11,181,642 parameters
    assert sum(p.numel() for p in model.parameters()) == 11_181_642, SOURCE


def test_jacobians_esd_and_norms_match_autograd(model: nn.Module) -> None:
    ref = cases.reference_jacobians(model, X, "softmax")
    got = jacspec.jacobians(model, X)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-13)
    flat = ref.reshape(len(X), -1).numpy()
    want = np.sort(np.linalg.eigvalsh(flat @ flat.T / len(X)))[::-1]
    e = jacspec.esd(model, X)
    np.testing.assert_allclose(e.eigenvalues[: len(X)], want, rtol=1e-9, atol=1e-18)
    norms = jacspec.jacobian_norms(model, (X, Y))
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(flat, axis=1), rtol=1e-9)
    pp = jacspec.per_point_generalization(model, (X, Y))
    np.testing.assert_allclose(pp.frame["jacobian_norm"], np.linalg.norm(flat, axis=1),
                               rtol=1e-9)


def test_analyze_with_a_layer_row_and_the_tracker(model: nn.Module) -> None:
    a = jacspec.analyze(model, (X, Y), layers=["layer4"], randomize=False)
    assert list(a.table.index) == ["input->output", "input->layer4", "layer4->output"]
    ref = cases.reference_jacobians(model, X, "softmax").reshape(len(X), -1).numpy()
    lam = np.linalg.eigvalsh(ref @ ref.T / len(X)).max()
    np.testing.assert_allclose(a.table.loc["input->output", "lambda_max"], lam, rtol=1e-9)
    tracker = jacspec.Tracker(X, metrics=["lambda_max", "trace"], every=1)
    row = tracker.step(model, 0)
    assert row is not None
    np.testing.assert_allclose(row["lambda_max"], lam, rtol=1e-6)
    assert not any(p.requires_grad is False for p in model.parameters())


def test_cli_analyze_reads_the_factory_and_its_weights(model: nn.Module, tmp_path,
                                                       capsys) -> None:
    from jacspec.cli.main import main

    weights = tmp_path / "resnet18.pt"
    torch.save(model.float().state_dict(), weights)
    model.double()
    x = np.random.default_rng(4).standard_normal((6, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "imgs.npz", x_train=x, y_train=np.arange(6) % 10)
    assert main(["analyze", f"{__name__}:make_resnet18", "--weights", str(weights),
                 "--data", str(tmp_path / "imgs.npz"), "--dtype", "float64",
                 "--no-randomize", "--no-progress", "--json", "-"]) == 0, SOURCE
    payload = json.loads(capsys.readouterr().out)
    e = jacspec.esd(model, torch.from_numpy(x).double())
    np.testing.assert_allclose(payload["metrics"]["lambda_max"], e.eigenvalues[0], rtol=1e-9)
