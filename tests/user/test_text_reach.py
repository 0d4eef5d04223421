"""Issue 18, the reach of input_module: layer rows after the input module (``L->output`` and
``input->L`` with ``h`` the input module's output) against ``torch.autograd.functional.
jacobian`` on a tiny BERT (float64, rtol 1e-9), layers before it refused with why; the
sharded Gram at an input module equals the reference Gram; trajectories refuse with what to
do; ``jacspec sensitivity`` and ``jacspec track`` take --input-module; the analysis says
which module its input->output row is taken at."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import text_cases as tc
import torch
from torch import nn

import jacspec
from jacspec.jacobian.layers import iter_layer_jacobians
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource

pytest.importorskip("transformers")

EMB = "bert.embeddings"
LAYER = "bert.encoder.layer.0.output"  # BertOutput: the encoder layer's output tensor
LENGTHS = [6, 4, 2, 5]


def _pad(t: torch.Tensor, axes: tuple[int, ...], width: int) -> torch.Tensor:
    """``t`` with zeros appended on each of ``axes`` up to ``width`` positions."""
    for ax in axes:
        shape = list(t.shape)
        shape[ax] = width - t.shape[ax]
        t = torch.cat([t, t.new_zeros(shape)], dim=ax)
    return t


def _layer_to_output(model: nn.Module, inputs: dict, layer: str) -> torch.Tensor:
    """``d logits / d h_L`` of one example alone: autograd of ``h_L -> logits`` with a hook
    setting layer ``layer``'s output to ``h_L``: ``(k, n, hidden)``."""
    h0 = tc.module_output(model, layer, **inputs)[0]

    def f(hl: torch.Tensor) -> torch.Tensor:
        handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: hl[None])
        try:
            return model(**inputs).logits[0]
        finally:
            handle.remove()

    return torch.autograd.functional.jacobian(f, h0)


def _input_to_layer(model: nn.Module, inputs: dict, layer: str) -> torch.Tensor:
    """``d h_L / d h`` of one example alone (``h`` the embeddings' output): ``(n, hidden, n,
    hidden)``."""
    h0 = tc.module_output(model, EMB, **inputs)[0]

    def f(h: torch.Tensor) -> torch.Tensor:
        got = []
        swap = model.get_submodule(EMB).register_forward_hook(lambda m, i, o: h[None])
        keep = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.append(o))
        try:
            model(**inputs)
        finally:
            swap.remove()
            keep.remove()
        return got[0][0]

    return torch.autograd.functional.jacobian(f, h0)


def _reference(model: nn.Module, batch: dict, kind: str) -> torch.Tensor:
    """Every example's reference alone, laid out on the batch's 6 positions (zeros)."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        inputs = tc.example(batch, i)
        if kind == "layer_to_output":
            rows.append(_pad(_layer_to_output(model, inputs, LAYER), (1,), 6))
        else:
            ref = _input_to_layer(model, inputs, LAYER)
            rows.append(_pad(ref, (0, 2), 6).reshape(48, 6, 8))
    return torch.stack(rows)


def test_layer_rows_after_the_input_module_match_autograd_with_padding() -> None:
    model = tc.tiny_bert()
    batch = tc.padded(LENGTHS)
    for kind, target in (("layer_to_output", f"{LAYER}->output"),
                         ("input_to_layer", f"input->{LAYER}")):
        src = JacobianSource.from_model(model, [batch], input_module=EMB, output="logits",
                                        target=target)
        J = torch.cat([b.jac for b in src])
        ref = _reference(model, batch, kind)
        assert J.shape == ref.shape == ((4, 3, 6, 8) if kind == "layer_to_output"
                                        else (4, 48, 6, 8))
        np.testing.assert_allclose(J.numpy(), ref.numpy(), rtol=1e-9, atol=1e-13)
        assert ref.abs().max() > 1e-3  # not a zero Jacobian
    direct = torch.cat([b.jac for b in iter_layer_jacobians(
        model, [batch], LAYER, options=JacobianOptions(input_module=EMB, output="logits"))])
    np.testing.assert_allclose(direct.numpy(), _reference(model, batch, "layer_to_output"),
                               rtol=1e-9, atol=1e-13)


def test_analyze_layer_rows_at_an_input_module_have_the_reference_spectra() -> None:
    model = tc.tiny_bert()
    batch = tc.padded(LENGTHS)
    a = jacspec.analyze(model, [batch], input_module=EMB, layers=[LAYER], output="logits",
                        randomize=False, side="primal")
    assert list(a.table.index) == ["input->output", f"input->{LAYER}", f"{LAYER}->output"]
    for kind, label in (("layer_to_output", f"{LAYER}->output"),
                        ("input_to_layer", f"input->{LAYER}")):
        ref = _reference(model, batch, kind).reshape(4, -1)
        want = np.linalg.eigvalsh((ref @ ref.T).numpy() / 4)
        np.testing.assert_allclose(a.table.loc[label, "lambda_max"], want.max(), rtol=1e-9)
        np.testing.assert_allclose(a.table.loc[label, "trace"], want.sum(), rtol=1e-9)
    assert a.summary()["input_module"] == EMB


@pytest.mark.parametrize("layer", ["bert.embeddings.word_embeddings", "bert.embeddings.LayerNorm",
                                   EMB])
def test_a_layer_before_or_inside_the_input_module_is_refused_with_why(layer: str) -> None:
    model = tc.tiny_bert()
    with pytest.raises(ValueError, match=rf"layer '{layer}' .*(runs before or beside "
                                         rf"input_module '{EMB}'|is the input_module)"):
        JacobianSource.from_model(model, [tc.padded([3, 2])], input_module=EMB,
                                  target=f"{layer}->output")


def test_layers_all_at_an_input_module_skips_the_layers_before_it() -> None:
    model = tc.tiny_bert()
    with pytest.warns(UserWarning, match="'bert.embeddings.word_embeddings' \\(Embedding: runs "
                                         "before or beside input_module"):
        a = jacspec.analyze(model, [tc.padded([3, 2])], input_module=EMB, layers="all",
                            randomize=False, output="logits")
    assert not [r for r in a.table.index if r.startswith(f"{EMB}.")]
    assert f"{LAYER}.LayerNorm->output" in a.table.index  # layer modules own parameters
    assert (a.table["lambda_max"] > 0).all()


def test_layer_rows_over_batches_of_other_lengths_say_how_to_pad() -> None:
    with pytest.raises(ValueError, match="layer rows need every batch padded to one length"):
        jacspec.analyze(tc.tiny_bert(), [tc.padded([3, 2]), tc.padded([2, 2], seed=1)],
                        input_module=EMB, layers=[LAYER], randomize=False)


# --------------------------------------------------------------------- the sharded Gram


def _reference_dual(model: nn.Module, batches: list[dict], width: int) -> np.ndarray:
    rows = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            ref = tc.reference_jacobian(model, EMB, tc.example(batch, i))
            rows.append(_pad(ref, (1,), width).reshape(-1))
    J = torch.stack(rows).numpy()
    return J.T @ J


def test_sharded_gram_at_an_input_module_equals_the_reference() -> None:
    from jacspec.spectra.shard import sharded_gram

    model = tc.tiny_bert()
    # later shards start with shorter batches, and one batch is longer but padded
    batches = [tc.padded([5, 3], seed=0), tc.padded([2, 4], seed=1),
               tc.padded([3, 1], seed=2)]
    batches[2] = {k: _pad(v, (1,), 7) if v.ndim == 2 else v for k, v in batches[2].items()}
    want = _reference_dual(model, batches, 5)
    for shards in (1, 2, 3):
        g = sharded_gram(model, batches, shards=shards, backend="local", input_module=EMB,
                         output="logits")
        assert g.n == 6
        np.testing.assert_allclose(g.matrix, want, rtol=1e-9, atol=1e-13)
    columns = {k: torch.cat([_pad(b[k], (1,), 7)[:, :5] if b[k].ndim == 2 else b[k]
                             for b in batches]) for k in batches[0]}  # whole columns, by rows
    g = sharded_gram(model, columns, shards=2, backend="local", input_module=EMB,
                     output="logits")
    np.testing.assert_allclose(g.matrix, want, rtol=1e-9, atol=1e-13)


# --------------------------------------------------------------------- trajectories, CLI


def test_trajectories_at_an_input_module_refuse_with_what_to_do() -> None:
    from jacspec.sensitivity.trajectories import compare_trajectories, ellipse, trajectory_profile

    model = tc.seeded(lambda: tc.CNN1d())
    ids = torch.randint(0, tc.VOCAB, (6, 7), generator=torch.Generator().manual_seed(8))
    tr = ellipse(*torch.randn(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"not supported by trajectory_profile: .*token "
                                         r"ids cannot be interpolated; .*jacobian_norms.*"
                                         r"inputs_embeds"):
        trajectory_profile(model, tr, input_module="embed")
    with pytest.raises(ValueError, match="not supported by compare_trajectories"):
        compare_trajectories(model, (ids, torch.arange(6) % 3), input_module="embed")


FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def cnn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(40, 4), nn.Flatten(), nn.Linear(20, 3)).double().eval()
""")


def _softmax_jacobians_at_the_embedding(model: nn.Module, ids: np.ndarray) -> torch.Tensor:
    """``d softmax / d h`` per example, ``h`` the embedding's output (autograd): ``(n, 15*...)``."""
    rows = []
    for row in torch.from_numpy(ids):
        h0 = model[0](row[None]).detach()[0]
        ref = torch.autograd.functional.jacobian(
            lambda h: torch.softmax(model[2](model[1](h[None])), 1)[0], h0)
        rows.append(ref.reshape(-1))
    return torch.stack(rows)


def _text_files(tmp_path, monkeypatch, split: str = "") -> np.ndarray:
    """The factory module and ``ids.npz`` of token ids (keys ``x``/``y``, or ``x_SPLIT``)."""
    (tmp_path / "reachmodel.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ids = np.random.default_rng(0).integers(0, 40, (6, 5))
    tail = f"_{split}" if split else ""
    np.savez(tmp_path / "ids.npz", **{f"x{tail}": ids, f"y{tail}": np.arange(6) % 3})
    return ids


def test_cli_sensitivity_takes_input_module(tmp_path, monkeypatch, capsys) -> None:
    ids = _text_files(tmp_path, monkeypatch, split="test")  # sensitivity's default split
    from jacspec.cli.main import main

    rc = main(["sensitivity", "reachmodel:cnn", "--data", "ids.npz", "--input-module", "0",
               "--json", "out.json"])
    assert rc == 0
    assert "no trajectories at --input-module" in capsys.readouterr().err
    got = json.loads((tmp_path / "out.json").read_text())
    import reachmodel

    J = _softmax_jacobians_at_the_embedding(reachmodel.cnn(), ids)
    np.testing.assert_allclose(got["jacobian_norm_mean"], J.norm(dim=1).mean().item(),
                               rtol=1e-9)
    assert got["trajectories"] == [] and got["settings"]["input_module"] == "0"
    assert main(["sensitivity", "reachmodel:cnn", "--data", "ids.npz", "--input-module", "0",
                 "--kinds", "random"]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if ": error: " in e]
    assert len(errors) == 1 and "--kinds='random' cannot go with --input-module" in errors[0]


def test_cli_track_takes_input_module(tmp_path, monkeypatch) -> None:
    ids = _text_files(tmp_path, monkeypatch)
    import reachmodel

    (tmp_path / "runs").mkdir()
    models = []
    for step in (0, 10):
        m = reachmodel.cnn()
        with torch.no_grad():
            m[2].weight.mul_(1 + step / 10)
        torch.save(m.state_dict(), tmp_path / "runs" / f"step_{step:06d}.pt")
        models.append(m)
    from jacspec.cli.main import main

    rc = main(["track", "reachmodel:cnn", "--weights", "runs", "--data", "ids.npz",
               "--input-module", "0", "--dtype", "float64", "--metrics", "lambda_max",
               "--json", "track.json", "--no-progress"])
    assert rc == 0
    rows = json.loads((tmp_path / "track.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 10]
    for row, m in zip(rows, models, strict=True):
        J = _softmax_jacobians_at_the_embedding(m, ids).numpy()
        want = np.linalg.eigvalsh(J @ J.T / 6).max()
        np.testing.assert_allclose(row["lambda_max"], want, rtol=1e-9)
