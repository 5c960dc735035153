"""Enjoy Your Editing: the parametrisations, the step, runs of each kind, bad settings."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import EVAL_TINY

from directions import Directions, LayerVectors, LocalDirections, VectorDirections
from generators import random_generator
from lightning_modules.eye import EnjoyYourEditing
from train import train


def test_layer_vectors_move_each_layer_its_own_way_and_only_their_layers():
    d = LayerVectors(4, 2, num_layers=5, init_scale=1.0, init_seed=0, layers=[1, 3])
    w = torch.randn(3, 5, 4)
    moved = d.shift(w, 1, 0.5)
    assert torch.equal(moved[:, [0, 2, 4]], w[:, [0, 2, 4]])
    assert torch.allclose(moved[:, 1] - w[:, 1], 0.5 * d.theta[1, 0].expand(3, -1))
    assert torch.allclose(moved[:, 3] - w[:, 3], 0.5 * d.theta[1, 1].expand(3, -1))
    with pytest.raises(ValueError, match="W\\+ latents N x 5 x 4"):
        d.shift(torch.randn(3, 4), 0, 1.0)


def test_local_directions_start_global_and_depend_on_the_latent_after_training():
    d = LocalDirections(6, 2, hidden=8, init_scale=1.0, init_seed=0)
    z = torch.randn(4, 6)
    assert torch.allclose(d.shift(z, 1, 2.0), z + 2.0 * d.theta[1])  # the net starts at zero
    torch.nn.init.normal_(d.net[2].weight)
    per_sample = d.direction_at(z, 1)
    assert not torch.allclose(per_sample[0], per_sample[1])
    assert torch.allclose(d.shift(z, 1, 0.0), z)


def test_both_parametrisations_round_trip_through_a_directions_file(tmp_path):
    for made in (LayerVectors(4, 2, num_layers=3, init_seed=1), LocalDirections(4, 2, init_seed=1)):
        Directions(made, {"method": "eye", "space": "w+"}).save(tmp_path / "d.pt")
        loaded = Directions.load(tmp_path / "d.pt").directions
        w = torch.randn(2, 3, 4)
        assert type(loaded) is type(made) and torch.allclose(loaded.shift(w, 1, 0.7), made.shift(w, 1, 0.7))


def _module(**kwargs):
    generator = random_generator("dcgan", latent_dim=8, width=8)
    return EnjoyYourEditing(generator, regressor="shapes_regressor32.pt",
                            **{"lambda_disc": 0.0, **kwargs})


def test_the_step_moves_each_sample_by_its_distance_to_the_target():
    module = _module(factors=["x", "scale", "y"], edit_probability=0.5)
    batch = {"latent": torch.randn(64, 8), "seed": torch.tensor(3)}
    target, edited = module.draw(batch)
    assert ((target >= 0) & (target <= 1)).all() and edited.any(1).all()
    assert 0.2 < edited.float().mean() < 0.9  # about half, and at least one a sample
    z = batch["latent"]
    assert torch.equal(module.edit(z, torch.zeros(64, 3)), z)  # at its target: no move
    eps = torch.randn(64, 3)
    expected = z + sum(eps[:, [k]] * module.directions.theta[k] for k in range(3))
    assert torch.allclose(module.edit(z, eps), expected, atol=1e-6)
    terms = module.terms(batch)
    assert set(terms) == {"regression", "content"} and all(torch.isfinite(v) for v in terms.values())


def test_eye_refuses_bad_settings_before_work():
    with pytest.raises(ValueError, match="needs the generator's own trained discriminator"):
        _module(lambda_disc=0.05)
    with pytest.raises(ValueError, match="kind=layers .* generator.space=w\\+"):
        _module(kind="layers")
    with pytest.raises(ValueError, match="target_range"):
        _module(target_range=[1.0, 0.0])
    with pytest.raises(ValueError, match="no factor 'smile'"):
        _module(factors=["smile"])
    with pytest.raises(ValueError, match="distinct"):
        _module(factors=["x", "x"])


def test_eye_run_with_the_generators_own_discriminator(tiny_cfg):
    cfg = tiny_cfg("generator=dcgan_shapes", *EVAL_TINY, method="eye")
    metrics = train(cfg)
    out = f"{cfg.paths.output_dir}/{cfg.run_name}"
    directions = Directions.load(f"{out}/directions.pt")
    assert isinstance(directions.directions, VectorDirections) and directions.num_directions == 2
    assert directions.meta["alpha_range"] == 1.0
    for factor in ("x", "scale"):
        assert -1 <= metrics[f"r/{factor}"] <= 1 and metrics[f"lap1/{factor}"] >= 0
        assert f"d_change/{factor}" in metrics
    assert {"side/x/scale", "side/x/hue", "side/scale/x"} <= set(metrics)
    assert "side/x/x" not in metrics
    assert {"train/regression", "train/disc", "train/content"} <= set(metrics)
    ckpt = torch.load(f"{out}/checkpoints/last.ckpt", weights_only=True)
    frozen = ("generator.", "regressor.", "assessors.", "discriminator.", "content.")
    assert not any(k.startswith(frozen) for k in ckpt["state_dict"])
    assert __import__("pathlib").Path(f"{out}/eye_response.png").is_file()
    assert "eval/rca" in metrics or any(k.startswith("eval/") for k in metrics)
    saved = json.loads(open(f"{out}/metrics.json").read())["metrics"]
    assert saved["r/x"] == metrics["r/x"]


@pytest.mark.parametrize("kind, generator", [("layers", "stylegan2_random"), ("local", "dcgan_random")])
def test_eye_kinds_run_end_to_end(tiny_cfg, kind, generator):
    extra = ["generator.space=w+"] if kind == "layers" else []
    cfg = tiny_cfg(f"generator={generator}", *extra, f"method.kind={kind}",
                   "method.lambda_disc=0", method="eye")
    metrics = train(cfg)
    directions = Directions.load(f"{cfg.paths.output_dir}/{cfg.run_name}/directions.pt")
    assert directions.directions.kind == ("layer_vectors" if kind == "layers" else "local_mlp")
    assert "r/x" in metrics and "d_change/x" not in metrics
