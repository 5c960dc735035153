"""GAN Steerability: walks, the masked loss, a run end to end, bad settings."""
from __future__ import annotations

import pytest
import torch

from directions import Directions, MLPWalk, VectorDirections
from lightning_modules.steerability import steer_summary
from train import train


def test_mlp_walk_steps_compose():
    walk = MLPWalk(8, 1, hidden=16, step_size=0.25, init_seed=0)
    with torch.no_grad():
        for net in walk.nets:
            net[2].weight.normal_(std=0.3)  # a walk that visibly bends
    z = torch.randn(5, 8)
    assert torch.allclose(walk.shift(z, 0, 1.0), walk.shift(walk.shift(z, 0, 0.5), 0, 0.5), atol=1e-5)
    assert torch.allclose(walk.shift(z, 0, -0.75), walk.shift(walk.shift(z, 0, -0.25), 0, -0.5), atol=1e-5)
    assert torch.allclose(walk.shift(z, 0, 1.0).norm(dim=1), z.norm(dim=1), atol=1e-5)  # Z-space renorm
    assert torch.equal(walk.shift(z, 0, 0.1), z)  # less than half a step: no step
    mixed = walk.shift(z, 0, torch.tensor([0.5, -0.5, 0.0, 1.0, -1.0]))
    assert torch.allclose(mixed[1], walk.shift(z[1:2], 0, -0.5)[0], atol=1e-6)


def test_summary_finds_the_saturation():
    sliders = torch.linspace(-1, 1, 9)
    walked = torch.tensor([0.2, 0.2, 0.21, 0.35, 0.5, 0.65, 0.8, 0.81, 0.81])  # flat at both ends
    s = steer_summary(sliders, walked, walked)
    assert s["saturates_below"] == pytest.approx(-0.5) and s["saturates_above"] == pytest.approx(0.5)
    assert s["r2_unsaturated"] > 0.99 and s["r2_unsaturated"] > s["r2_full_range"]
    assert s["reachable_min"] == pytest.approx(0.2) and s["reachable_max"] == pytest.approx(0.81)


@pytest.mark.parametrize("edit, walk, loss", [("shift_x", "linear", "l2"), ("zoom", "mlp", "lap1"),
                                              ("color", "linear", "l2")])
def test_steerability_runs(tiny_cfg, edit, walk, loss):
    cfg = tiny_cfg(f"method.edit={edit}", f"method.walk={walk}",
                   f"method.loss={loss}", method="steerability")
    metrics = train(cfg)
    directions = Directions.load(f"{cfg.paths.output_dir}/{cfg.run_name}/directions.pt")
    assert isinstance(directions.directions, VectorDirections if walk == "linear" else MLPWalk)
    assert directions.num_directions == (3 if edit == "color" else 1)
    if edit in ("shift_x", "zoom"):  # the matching factor is measured along the walk
        assert {"slope", "r2_unsaturated", "saturates_above", "reachable_max"} <= set(metrics)
    ckpt = torch.load(f"{cfg.paths.output_dir}/{cfg.run_name}/checkpoints/last.ckpt", weights_only=False)
    assert not any(k.startswith(("generator.", "_regressor.")) for k in ckpt["state_dict"])


@pytest.mark.parametrize("override, message", [
    ("method.edit=blur", "unknown edit 'blur'"),
    ("method.walk=spline", "unknown walk 'spline'"),
    ("method.loss=l3", "unknown image distance 'l3'"),
    ("method.edit=color method.walk=mlp", "walk=mlp walks one slider"),
    ("method.loss=lpips", "LPIPS.*lap1"),
])
def test_bad_steerability_settings(tiny_cfg, override, message, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights, whatever the machine
    with pytest.raises(Exception, match=message):
        train(tiny_cfg(*override.split(), method="steerability"))
