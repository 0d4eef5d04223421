"""Trajectories (ellipses, translations, point sequences), profiles along them, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.sensitivity.norms import jacobian_norms
from jacspec.sensitivity.regions import count_transitions
from jacspec.sensitivity.trajectories import (
    compare_trajectories,
    different_class_ellipse,
    ellipse,
    points_trajectory,
    profiles_frame,
    random_ellipse,
    same_class_ellipse,
    trajectory_profile,
    translation_trajectory,
)

DT = torch.float64


def _data(n: int = 60, d: int = 6, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT), torch.arange(n) % k


def _net(d: int = 6, k: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                         nn.Linear(24, k)).to(DT)


def test_ellipse_passes_through_anchors_and_is_closed() -> None:
    p = torch.randn(3, 5, dtype=DT)
    tr = ellipse(p[0], p[1], p[2])
    torch.testing.assert_close(tr(list(tr.anchors)), p, rtol=0, atol=1e-12)
    torch.testing.assert_close(tr([0.0]), tr([1.0]), rtol=0, atol=1e-12)
    # an ellipse: z(t) - c lies in span(a, b) with c the mean of z over a period
    z = tr.points(600)
    centred = z - z.mean(0)
    assert torch.linalg.matrix_rank(centred, atol=1e-9) == 2


def test_dataset_ellipses_pick_the_right_classes() -> None:
    x, y = _data()
    same = same_class_ellipse((x, y), seed=3)
    assert len(set(same.settings["labels"])) == 1
    assert len(set(same.settings["indices"])) == 3
    assert all(int(y[i]) == same.settings["labels"][0] for i in same.settings["indices"])
    diff = different_class_ellipse((x, y), seed=3)
    assert len({int(y[i]) for i in diff.settings["indices"]}) == 3
    torch.testing.assert_close(diff(list(diff.anchors)), x[diff.settings["indices"]])
    r1, r2 = random_ellipse((x, y), seed=5), random_ellipse((x, y), seed=5)
    assert torch.equal(r1.points(10), r2.points(10))
    assert not torch.equal(r1.points(10), random_ellipse((x, y), seed=6).points(10))
    with pytest.raises(ValueError):
        same_class_ellipse(x)  # no labels


def test_translation_hits_integer_shifts_and_interpolates() -> None:
    img = torch.randn(4, 6, dtype=DT)
    tr = translation_trajectory(img.reshape(-1), image_shape=(4, 6))
    for s in range(6):
        torch.testing.assert_close(tr([s / 6])[0], torch.roll(img, s, dims=1).reshape(-1))
    half = tr([2.5 / 6])[0]
    ref = 0.5 * (torch.roll(img, 2, dims=1) + torch.roll(img, 3, dims=1))
    torch.testing.assert_close(half, ref.reshape(-1))
    torch.testing.assert_close(tr([0.0]), tr([1.0 - 1e-15]), atol=1e-12, rtol=0)
    seq = torch.randn(1, 40, dtype=DT)  # MNIST-1D style: translate along the sequence
    tr1 = translation_trajectory(seq)
    torch.testing.assert_close(tr1([3 / 40])[0], torch.roll(seq, 3, dims=-1))
    with pytest.raises(ValueError):
        translation_trajectory(img.reshape(-1), image_shape=(5, 5))


def test_points_trajectory_hits_points() -> None:
    pts = torch.randn(7, 3, dtype=DT)
    tr = points_trajectory(pts)
    torch.testing.assert_close(tr.points(7), pts)
    torch.testing.assert_close(tr([0.5 / 7])[0], 0.5 * (pts[0] + pts[1]))
    torch.testing.assert_close(tr([6.5 / 7])[0], 0.5 * (pts[6] + pts[0]))


def test_profile_against_brute_force() -> None:
    net = _net()
    x, y = _data()
    tr = different_class_ellipse((x, y), seed=1)
    m, refine = 30, 6
    prof = trajectory_profile(net, tr, num_points=m, refine=refine, batch_size=7,
                              code_batch_size=50)
    pts = tr.points(m)
    torch.testing.assert_close(torch.from_numpy(prof.jacobian_norm), jacobian_norms(net, pts))
    # curvature: 1/2 ||f'(z_j) - f'(z_{j+1})||_F of the logits, closed
    jl = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v[None])[0], p)
                      for p in pts])
    ref = 0.5 * (jl - jl.roll(-1, dims=0)).flatten(1).norm(dim=1)
    np.testing.assert_allclose(prof.curvature, ref.numpy(), rtol=1e-9, atol=1e-12)
    total = count_transitions(net, tr.points(m * refine)).total
    assert prof.total_transitions == total
    fine = tr.points(m * refine)
    steps = (fine - fine.roll(-1, dims=0)).norm(dim=1).reshape(m, refine).sum(1)
    np.testing.assert_allclose(prof.segment_length, steps.numpy(), rtol=1e-10)
    ref_anchor = jacobian_norms(net, tr(list(tr.anchors))).numpy()
    np.testing.assert_allclose(prof.anchor_jacobian_norm, ref_anchor, rtol=1e-10)
    s = prof.summary()
    assert s["transition_density"] == pytest.approx(total / steps.sum().item())
    frame = prof.to_frame()
    assert list(frame.columns)[:3] == ["kind", "t", "jacobian_norm"] and len(frame) == m
    json.dumps(prof.to_dict())


def test_compare_trajectories_covers_all_kinds() -> None:
    net = _net()
    x, y = _data()
    profs = compare_trajectories(net, (x, y), image_shape=(2, 3), num_points=12, refine=2)
    table = profiles_frame(profs)
    assert list(table["kind"]) == ["same_class", "different_class", "random", "translation"]
    assert np.all(np.isfinite(table["jacobian_norm_mean"]))
    with pytest.raises(ValueError):
        compare_trajectories(net, (x, y), kinds=["circle"])


def test_cli_writes_json_and_plots(tmp_path) -> None:
    from jacspec.cli.main import main
    from jacspec.models.builders import mlp, save_checkpoint

    spec = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 32, "depth": 2,
            "seed": 0}
    ckpt = save_checkpoint(tmp_path / "m.pt", mlp(64, 10, width=32, depth=2, seed=0), spec)
    out = tmp_path / "s.json"
    rc = main(["sensitivity", str(ckpt), "--data", "digits", "--n", "80", "--points", "12",
               "--refine", "2", "--json", str(out), "--plot", str(tmp_path / "figs")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert math.isfinite(res["jacobian_norm_mean"]) and res["jacobian_norm_mean"] > 0
    kinds = [t["kind"] for t in res["trajectories"]]
    assert kinds == ["same_class", "different_class", "random", "translation"]
    assert all(len(t["jacobian_norm"]) == 12 and t["transitions"] >= 0
               for t in res["trajectories"])
    assert 0.0 <= res["per_point"]["fraction_in_eq6"] <= 1.0
    assert (tmp_path / "figs" / "sensitivity_profiles.png").stat().st_size > 0
    assert main(["sensitivity", str(ckpt), "--data", "digits", "--kinds", "circle"]) == 2


def test_mean_profile_figure_averages_each_kind() -> None:
    """plot_mean_profiles draws, per kind, exp(mean log ||J||) and the mean density."""
    from jacspec.report.sensitivity_plots import plot_mean_profiles

    net = _net()
    x, y = _data()
    profs = [trajectory_profile(net, build((x, y), seed=s), num_points=24, refine=4)
             for build in (same_class_ellipse, different_class_ellipse) for s in (0, 1)]
    fig = plot_mean_profiles(profs, smooth=0)
    ax_j, ax_t = fig.axes
    by_label = {ln.get_label(): ln for ln in ax_j.get_lines() if not ln.get_label().startswith("_")}
    same = [p for p in profs if p.kind == "same_class"]
    geo = np.exp((np.log(same[0].jacobian_norm) + np.log(same[1].jacobian_norm)) / 2)
    np.testing.assert_allclose(by_label["same_class (n=2)"].get_ydata(), geo, rtol=1e-12)
    dens = {ln.get_label(): ln for ln in ax_t.get_lines() if not ln.get_label().startswith("_")}
    mean = (same[0].transition_density + same[1].transition_density) / 2
    np.testing.assert_allclose(dens["same_class (n=2)"].get_ydata(), mean, rtol=1e-12)
    assert ax_j.get_yscale() == "log"
    with pytest.raises(ValueError, match="profiles is empty"):
        plot_mean_profiles([])
