"""JacobianOptions: validated once with one sentence naming the field, and passed on whole
from every entry point to the engine's one batch loop (layers included)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import jacspec
from jacspec.jacobian import engine, layers
from jacspec.jacobian.options import FIELDS, JacobianOptions, resolve_options
from jacspec.jacobian.source import JacobianSource
from jacspec.sensitivity.norms import jacobian_norms, per_point_generalization


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def _x(n: int = 20) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("output", "probs", "output='probs' is not supported"),
        ("dtype", torch.float16, "dtype must be torch.float32, torch.float64 or None"),
        ("device", "gpu7", "device='gpu7' is not a device"),
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("batch_size", True, "batch_size must be a positive integer"),
        ("method", "fast", "method='fast' is not supported"),
        ("check_independence", "yes", "check_independence must be True or False"),
        ("progress", 1, "progress must be True or False"),
    ],
)
def test_bad_fields_are_one_sentence_naming_the_field(field: str, value, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as err:
        JacobianOptions(**{field: value})
    assert "\n" not in str(err.value) and field in str(err.value)
    with pytest.raises((ValueError, TypeError), match=match):
        JacobianOptions().replace(**{field: value})


def test_replace_to_dict_and_keywords() -> None:
    o = JacobianOptions(dtype="float64", device="cpu", batch_size=3)
    assert o.dtype is torch.float64 and o.device == torch.device("cpu")
    d = o.to_dict()
    assert json.loads(json.dumps(d)) == d and list(d) == list(FIELDS)
    assert d["dtype"] == "float64" and d["device"] == "cpu"
    assert o.replace(method="loop").method == "loop" and o.method == "auto"
    # a keyword given wins over options; None means "not given"
    assert resolve_options(o, batch_size=None, method="loop") == o.replace(method="loop")
    with pytest.raises(TypeError, match="no field 'bach_size'"):
        o.replace(bach_size=2)
    with pytest.raises(TypeError, match="unknown Jacobian option 'bach_size'"):
        resolve_options(o, bach_size=2)
    with pytest.raises(TypeError, match="options must be a JacobianOptions"):
        resolve_options({"batch_size": 2})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jacobian_method='fast'"):
        resolve_options(labels={"method": "jacobian_method"}, method="fast")


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> list[JacobianOptions]:
    """The options each run of the one batch loop received (engine and layers)."""
    got: list[JacobianOptions] = []
    real = engine.jacobian_loop

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        got.append(kwargs["options"])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "jacobian_loop", spy)
    monkeypatch.setattr(layers, "jacobian_loop", spy)
    return got


def test_the_same_options_reach_the_engine_from_every_entry_point(
    seen: list[JacobianOptions],
) -> None:
    model, x = _model(), _x()
    opts = JacobianOptions(batch_size=7, method="loop", check_independence=False)
    calls = {
        "iter_jacobians": lambda: list(jacspec.iter_jacobians(model, x, options=opts)),
        "jacobians": lambda: jacspec.jacobians(model, x, options=opts),
        "data_jacobian": lambda: jacspec.data_jacobian(model, x, options=opts),
        "iter_layer_jacobians": lambda: list(layers.iter_layer_jacobians(model, x, "1",
                                                                         options=opts)),
        "gram": lambda: jacspec.gram(model, x, options=opts),
        "esd": lambda: jacspec.esd(model, x, options=opts),
        "estimate_esd exact": lambda: jacspec.estimate_esd(model, x, method="exact",
                                                           options=opts),
        "estimate_esd slq": lambda: jacspec.estimate_esd(
            model, x, method="slq", options=opts, num_steps=5, num_vectors=2),
        "analyze": lambda: jacspec.analyze(model, x, options=opts, layers="all",
                                           randomize=False),
        "source": lambda: list(JacobianSource.from_model(model, x, opts, target="input->1")),
    }
    for name, call in calls.items():
        seen.clear()
        call()
        assert seen, name
        assert all(o.replace(progress=False) == opts for o in seen), (name, seen)
    for name, call in {
        "jacobian_norms": lambda: jacobian_norms(model, x, options=opts),
        "per_point_generalization": lambda: per_point_generalization(
            model, (x, torch.zeros(20, dtype=torch.long)), options=opts),
    }.items():
        seen.clear()
        call()
        assert seen and all(o == opts.replace(output="logits") for o in seen), name


def test_keywords_build_the_same_options(seen: list[JacobianOptions]) -> None:
    model, x = _model(), _x()
    want = JacobianOptions(output="logits", batch_size=5, method="replicate")
    jacspec.analyze(model, x, output="logits", batch_size=5, jacobian_method="replicate",
                    randomize=False)
    jacspec.gram(model, x, output="logits", batch_size=5, jacobian_method="replicate")
    jacspec.jacobians(model, x, output="logits", batch_size=5, method="replicate")
    assert seen and all(o == want for o in seen)
    g = jacspec.gram(model, x, options=want)
    assert g.settings["jacobian"] == want.to_dict() and g.settings["jacobian_method"] == "replicate"


def test_layers_and_engine_share_the_batch_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """One loop, one batch-size rule: lowering the budget shrinks both in the same way."""
    model, x = _model(), _x(50)
    monkeypatch.setattr(engine, "BATCH_BYTES", 3 * 18 * 8 * 4)  # 4 examples of k*d = 18
    sizes = [b.jac.shape[0] for b in engine.iter_jacobians(model, x)]
    assert sizes[:3] == [4, 4, 4]
    # input->layer: m*d = 8*6 = 48 entries per example, float64 -> the same rule
    lay = [b.jac.shape[0] for b in layers.iter_layer_jacobians(
        model, x, "1", direction="input_to_layer")]
    assert lay[0] == engine.batch_size_for(8 * 6, 8, engine.BATCH_BYTES)
    monkeypatch.setattr(engine, "BATCH_BYTES", 2**40)
    assert [b.jac.shape[0] for b in layers.iter_layer_jacobians(model, torch.cat([x] * 100),
                                                                "1")][0] == engine.MAX_BATCH
