"""Direction methods on StyleGAN2 checkpoints of the published formats, end to end through
train.py, evaluate.py and edit.py: `python train.py method=voynov generator=stylegan2
generator.path=<file>` for a rosinality .pt and an NVIDIA .pkl."""
from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from conftest import CONFIGS, EVAL_TINY, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_formats_nvidia import Generator as NvidiaGenerator
from test_formats_nvidia import snapshot, write_snapshot

from directions import Directions
from edit import edit
from evaluate import evaluate
from generators import load_generator, random_generator
from generators.stylegan2 import StyleGAN2Discriminator
from train import train

TINY_RUN = ["method=voynov", "run_name=sg", "logger=none", "data.batch_size=8", "data.val_batches=2",
            "trainer.max_steps=3", "trainer.val_check_interval=3", "method.num_directions=3",
            "method.traversal.every_n_steps=0", "method.traversal.num_seeds=2",
            "method.traversal.steps=3", "callbacks.checkpoint.every_n_train_steps=3",
            "trainer.enable_progress_bar=false", *EVAL_TINY]


@pytest.fixture(scope="module")
def rosinality_file(tmp_path_factory):
    g = random_generator("stylegan2", init_seed=1, frozen=False, resolution=16, style_dim=16,
                         n_mlp=2, channels=[16, 16, 8])
    d = StyleGAN2Discriminator(16, channels=[16, 16, 8])
    path = tmp_path_factory.mktemp("rosinality") / "550000.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "g_optim": {},
                "d_optim": {}, "args": argparse.Namespace(size=16, latent=16, n_mlp=2),
                "ada_aug_p": 0.0}, path)
    return path


@pytest.fixture(scope="module")
def nvidia_file(tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = NvidiaGenerator().eval()
    path = tmp_path_factory.mktemp("nvidia") / "network-snapshot-000100.pkl"
    write_snapshot(path, snapshot(g))
    return path


@pytest.mark.parametrize("space", ["w", "w+"])
def test_voynov_on_a_rosinality_checkpoint(tmp_path, rosinality_file, space):
    cfg = compose_cfg(TINY_RUN + ["generator=stylegan2", f"generator.path={rosinality_file}",
                                  f"generator.space={space}"], tmp_path)
    metrics = train(cfg)
    run = tmp_path / "sg"
    directions = Directions.load(run / "directions.pt")
    assert directions.meta["space"] == space
    assert directions.meta["generator"]["adapter"] == "stylegan2-rosinality"
    # no regressor for a user's checkpoint: the metrics that need none, and the report says so
    report = json.loads((run / "evaluation.json").read_text())
    assert report["regressor"]["path"] is None and "experiment=regressor_folder" in report["regressor"]["note"]
    assert "rca" in metrics.keys() or "eval/rca" in metrics
    assert "coverage" not in report["results"]["voynov"]["metrics"]
    assert "need an attribute regressor" in (run / "evaluation.md").read_text()
    assert (run / "traversal.png").is_file() and (run / "traversal_annotated.png").is_file()


def test_layer_range_directions_in_w_plus(tmp_path, rosinality_file):
    cfg = compose_cfg(TINY_RUN + ["generator=stylegan2", f"generator.path={rosinality_file}",
                                  "generator.space=w+", "method.layers=coarse",
                                  "evaluation.enabled=false"], tmp_path)
    train(cfg)
    directions = Directions.load(tmp_path / "sg" / "directions.pt")
    assert directions.layers == [0, 1, 2] == directions.meta["layers"]
    g = load_generator(rosinality_file, space="w+")
    w = g.sample(2, torch.Generator().manual_seed(0))
    moved = directions.shift(w, 0, 3.0)
    assert torch.equal(moved[:, 3:], w[:, 3:]) and not torch.equal(moved[:, :3], w[:, :3])
    with pytest.raises(Exception, match="needs generator.space=w\\+"):
        train(compose_cfg(TINY_RUN + ["generator=stylegan2", f"generator.path={rosinality_file}",
                                      "generator.space=w", "method.layers=coarse",
                                      "run_name=bad"], tmp_path))


def test_voynov_on_an_nvidia_pickle_and_the_file_alone_drives_the_tools(tmp_path, nvidia_file):
    cfg = compose_cfg(TINY_RUN + ["generator=stylegan2", f"generator.path={nvidia_file}",
                                  "generator.truncation_psi=0.7", "evaluation.enabled=false"], tmp_path)
    train(cfg)
    # A directions file copied away from its run: it records how to rebuild its generator.
    alone = tmp_path / "shared" / "directions.pt"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "sg" / "directions.pt", alone)
    directions = Directions.load(alone)
    assert directions.meta["generator"]["truncation"]["psi"] == 0.7
    # Neither script is told the generator: it comes from the file (the default generator
    # group, the shipped DCGAN, would be refused by the identity check).
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        edit_cfg = compose("edit", overrides=[f"directions={alone}", "direction=[0,1]", "seeds=[0]"])
        eval_cfg = compose("evaluate", overrides=[f"directions={alone}", "logger=none", *EVAL_TINY,
                                                  f"evaluation.cache_dir={tmp_path / 'cache'}"])
    out = edit(edit_cfg)
    assert out.is_file() and out.parent == alone.parent / "edits"
    report = evaluate(eval_cfg)
    assert report["generator"]["adapter"] == "stylegan2-nvidia"
    assert report["generator"]["truncation"]["psi"] == 0.7


FIT_FREE_RUN = ["run_name=ff", "logger=none", "data.batch_size=50", "data.val_batches=1",
                "method.traversal.num_seeds=2", "method.traversal.steps=3",
                "trainer.enable_progress_bar=false", "evaluation.enabled=false"]


@pytest.mark.parametrize("method,extra", [
    ("sefa", ["method.layers=coarse", "generator.space=w+"]),
    ("ganspace", ["method.samples=200", "generator.space=w"]),
    ("lowrankgan", ["method.samples=1", "method.jacobian_size=8",
                    "generator.space=w"]),
    # a user's file names no regressor: InterFaceGAN is given one (here the shipped one, which
    # reads 32 px images; this file draws 16 px ones, resized by the regressor)
    # Plumerault reads the edited factor with the shipped regressor (16 px images resized)
    ("plumerault", ["method.samples=4", "method.steps=2",
                    "method.strengths=[1,2]", "method.eval_samples=4",
                    "method.regressor=shapes_regressor32.pt", "generator.space=w"]),
    ("interfacegan", ["method.samples=200", "method.ratio=0.1",
                      "method.factors=[scale,x]",
                      "method.regressor=shapes_regressor32.pt", "generator.space=w"]),
])
def test_fit_free_methods_on_a_rosinality_checkpoint(tmp_path, rosinality_file, method, extra):
    """The closed-form methods on a user's StyleGAN2 file."""
    cfg = compose_cfg([f"method={method}", "generator=stylegan2", f"generator.path={rosinality_file}",
                       *FIT_FREE_RUN, *extra], tmp_path)
    train(cfg)
    directions = Directions.load(tmp_path / "ff" / "directions.pt")
    assert directions.meta["method"] == method
    assert directions.meta["generator"]["adapter"] == "stylegan2-rosinality"
    g = load_generator(rosinality_file, space=extra[-1].split("=")[1])
    w = g.sample(2, torch.Generator().manual_seed(0))
    last = directions.num_directions - 1  # Plumerault finds one direction
    assert directions.apply(w, [(0, 1.0), (last, -1.0)]).shape == w.shape


def test_eye_on_a_rosinality_checkpoint_uses_its_own_discriminator(tmp_path, rosinality_file):
    """EYE on a user's StyleGAN2 file: its stored discriminator ``d`` is the one judged by, and
    per-layer directions move W+ codes."""
    cfg = compose_cfg(["method=eye", "generator=stylegan2", f"generator.path={rosinality_file}",
                       "generator.space=w+", "method.kind=layers",
                       "method.regressor=shapes_regressor32.pt", *FIT_FREE_RUN,
                       "trainer.max_steps=3", "trainer.val_check_interval=3"], tmp_path)
    metrics = train(cfg)
    directions = Directions.load(tmp_path / "ff" / "directions.pt")
    assert directions.directions.kind == "layer_vectors" and directions.space == "w+"
    assert {"r/x", "r/scale", "d_change/x"} <= set(metrics)
    g = load_generator(rosinality_file, space="w+")
    assert g.discriminator is not None
    w = g.sample(2, torch.Generator().manual_seed(0))
    assert directions.apply(w, [(0, 0.3), (1, -0.2)]).shape == w.shape
