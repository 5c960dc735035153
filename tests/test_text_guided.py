"""Text-guided directions (lightning_modules/text_guided.py): a real Trainer run whose direction
does what its text says (with a CLIP that reads colour), runs through train.py in Z, W+ and S
on tiny generators and on a StyleGAN2 file, resume without the CLIP in the checkpoint, and
StyleCLIP's global directions on the same file."""
from __future__ import annotations

import re

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY, compose_cfg, tiny_world_clip
from test_styleclip import TINY_GENERATOR, ColourClip
from test_stylegan2_runs import rosinality_file  # noqa: F401 - a fixture

from common.errors import user_error_in
from datamodules.latent import LatentDataModule
from directions import Directions
from generators import random_generator
from lightning_modules.text_guided import TextGuided
from train import train


def test_the_learned_direction_makes_images_redder(tmp_path):
    """With a CLIP that reads colour, "a red shape" from "a shape": the directional loss falls
    and the learned direction raises red against green and blue on unseen latents."""
    generator = random_generator("stylegan2", space="w", **TINY_GENERATOR)
    clip = ColourClip()
    module = TextGuided(generator, clip, prompts=["a red shape"], lambda_content=0.0,
                        lambda_latent=0.01, alpha_range=2.0, min_alpha=1.0, init_seed=0,
                        std_samples=500, optimizer=lambda params: torch.optim.Adam(params, lr=5e-2),
                        traversal={"every_n_steps": 0, "num_seeds": 1, "steps": 3})
    data = LatentDataModule(batch_size=16, seed=0, val_batches=1, generator=generator)
    trainer = pl.Trainer(max_steps=60, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=str(tmp_path),
                         val_check_interval=30, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    test = generator.draw(32, torch.Generator().manual_seed(99))[0]

    def redness(latent):
        with torch.no_grad():
            rgb = clip.encode_image(generator(latent))
        return float((rgb[:, 0] - rgb[:, 1:].mean(1)).mean())

    shifted = module.directions.shift(test, 0, 2.0)
    assert redness(shifted) > redness(test) + 0.1
    assert module.final_metrics["final_clip"] < 0.5  # the change points where the text does
    assert Directions.load(tmp_path / "directions.pt").num_directions == 1


TEXT = ["method=text_guided", "data.batch_size=4", "method.std_samples=64"]


@pytest.mark.parametrize("extra", [
    ["generator=dcgan_random", "method.prompts=[a large shape,a red circle]"],
    ["generator=stylegan2_random", "generator.space=w+", "method.layers=coarse"],
    ["generator=stylegan2_random", "generator.space=s", "method.layers=0-2", "method.loss=global"],
])
def test_text_guided_runs_through_train_py(tmp_path, extra):
    cfg = compose_cfg(["run_name=tg", *TINY, *TEXT, f"clip.path={tiny_world_clip(tmp_path)}", *extra],
                      tmp_path)
    train(cfg)
    made = Directions.load(tmp_path / "tg" / "directions.pt")
    assert made.meta["method"] == "text_guided"
    assert made.num_directions == (2 if "generator=dcgan_random" in extra else 1)
    checkpoint = torch.load(tmp_path / "tg" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not [k for k in checkpoint["state_dict"] if k.startswith(("clip.", "generator."))]
    # resumed for two more batches from its checkpoint
    train(compose_cfg(["run_name=tg", *TINY, *TEXT, f"clip.path={tmp_path / 'clip.pt'}", *extra,
                       "ckpt_path=last", "trainer.max_steps=6"], tmp_path))
    assert torch.load(tmp_path / "tg" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_text_guided_and_styleclip_on_a_stylegan2_file(tmp_path, rosinality_file):  # noqa: F811
    """Both text methods on a user's StyleGAN2 file (rosinality layout), in S."""
    clip = tiny_world_clip(tmp_path)
    file = ["generator=stylegan2", f"generator.path={rosinality_file}", "generator.space=s",
            f"clip.path={clip}"]
    train(compose_cfg(["run_name=tg", *TINY, *TEXT, *file], tmp_path))
    assert Directions.load(tmp_path / "tg" / "directions.pt").meta["generator"]["adapter"] == \
        "stylegan2-rosinality"
    train(compose_cfg(["method=styleclip_global", "run_name=sc", "logger=none", "evaluation.enabled=false",
                       "trainer.enable_progress_bar=false", "method.images=2", "data.batch_size=2",
                       "method.std_samples=100", "method.traversal.num_seeds=1", "method.traversal.steps=3",
                       *file], tmp_path))
    made = Directions.load(tmp_path / "sc" / "directions.pt")
    assert made.meta["space"] == "s" and made.num_directions == 1


def test_text_guided_refuses_bad_options_before_work(tmp_path):
    clip = tiny_world_clip(tmp_path)
    for extra, message in ((["method.loss=nope"], "method.loss"),
                           (["method.prompts=[a zebra]"], "does not know the words"),
                           (["method.min_alpha=5"], "min_alpha"),
                           (["method.layers=coarse"], "w\\+ or s")):
        with pytest.raises(Exception) as info:
            train(compose_cfg(["run_name=bad", *TINY, *TEXT, f"clip.path={clip}", *extra], tmp_path))
        assert re.search(message, str(user_error_in(info.value)))
        assert not (tmp_path / "bad").exists()
