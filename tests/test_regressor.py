"""Attribute regressor: targets, losses, weights files, training through train.py."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose_cfg

import train
from datamodules.world import FACTORS, ShapesWorld
from regressors.attributes import AttributeRegressor, Target, load_regressor

TINY_BACKBONE = "method.backbone_kwargs={channels:[8,8,16,16],stem_width:8}"


def tiny(targets="world"):
    return AttributeRegressor(targets, backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8})


def test_rotation_of_a_circle_is_not_a_label():
    model = tiny()
    factors = torch.tensor([[1.0, 0.5, 0.3, 0.5, 0.5, 0.1], [0.0, 0.5, 0.3, 0.5, 0.5, 0.1]])
    mask = model.label_mask(factors)
    assert mask[0].tolist() == [True, True, False, True, True, True]
    assert mask[1].all()


def test_decoding_reads_classes_values_and_angles():
    model = tiny()
    angle = 2 * math.pi * 0.9
    raw = torch.tensor([[0.0, 5.0, 0.0, 0.4, math.cos(angle), math.sin(angle), 0.2, 0.7, 1.0, 0.0]])
    out = model.decode(raw)
    assert out["values"][0].tolist() == pytest.approx([1.0, 0.4, 0.9, 0.2, 0.7, 0.0], abs=1e-5)
    assert out["probs"]["shape"].argmax().item() == 1
    assert not out["valid"][0, 2]  # a predicted circle has no rotation


def test_save_and_load_round_trip(tmp_path):
    model = tiny().eval()
    images = ShapesWorld(32).render(ShapesWorld(32).sample_factors(4))
    path = model.save(tmp_path / "r.pt", info={"note": "test"})
    loaded = load_regressor(path)
    assert loaded.factor_names == list(FACTORS) and loaded.info == {"note": "test"}
    assert torch.allclose(loaded(images), model(images), atol=2e-2)  # half-precision weights


def test_bad_regressor_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiment=regressor_shapes"):
        load_regressor(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_regressor(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown kind"):
        Target("a", "ordinal")
    with pytest.raises(ValueError, match="not a target"):
        tiny([{"name": "a", "kind": "continuous", "defined_if": ["b", [0]]}])


def test_regressor_trains_through_train_py(tmp_path):
    cfg = compose_cfg(["experiment=regressor_shapes", "run_name=test", "logger=none",
                       "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
                       TINY_BACKBONE, "data.batch_size=16", "data.val_batches=1"], tmp_path)
    train.train(cfg)
    run = tmp_path / "test"
    scores = json.loads((run / "regressor_scores.json").read_text())
    assert {"acc_shape", "r2_x", "r2_hue"} <= set(scores["held_out"])
    assert load_regressor(run / "regressor.pt").factor_names == list(FACTORS)
