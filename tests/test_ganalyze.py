"""GANalyze: the norm-keeping transform, the assessor, a run end to end, bad settings."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import EVAL_TINY

from directions import Directions, VectorDirections
from generators import random_generator
from lightning_modules.ganalyze import GANalyze
from metrics.curves import linear_fit
from regressors.attributes import AttributeAssessor, load_regressor
from train import train


def test_renormalisation_keeps_each_samples_norm():
    d = VectorDirections(8, 1, init_scale=1.0, keep_norm=True, init_seed=0)
    z = torch.randn(16, 8) * torch.linspace(0.5, 3.0, 16)[:, None]  # very different norms
    for alpha in (-0.5, 0.3, torch.linspace(-0.5, 0.5, 16)):
        assert torch.allclose(d.shift(z, 0, alpha).norm(dim=1), z.norm(dim=1), atol=1e-5)


def test_assessor_reads_one_scalar_factor_and_stays_frozen():
    regressor = load_regressor("shapes_regressor32.pt")
    assessor = AttributeAssessor(regressor, "scale").train()
    assert not assessor.training and not regressor.training
    with pytest.raises(ValueError, match="hue.*circular.*scale"):
        AttributeAssessor(regressor, "hue")
    with pytest.raises(ValueError, match="no factor 'smile'"):
        AttributeAssessor(regressor, "smile")
    # any factor as a scalar: a class probability, an angle's component
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    probs = torch.stack([AttributeAssessor(regressor, f"shape={k}")(images) for k in range(3)])
    assert torch.allclose(probs.sum(0), torch.ones(4), atol=1e-5)
    cos, sin = (AttributeAssessor(regressor, f"hue.{c}")(images) for c in ("cos", "sin"))
    assert torch.allclose(cos**2 + sin**2, torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError, match="shape=0"):
        AttributeAssessor(regressor, "shape=7")


def test_linear_fit_of_a_line():
    x = torch.linspace(-0.5, 0.5, 11)
    slope, intercept, r2 = linear_fit(x, 0.9 * x + 0.1)
    assert slope == pytest.approx(0.9) and intercept == pytest.approx(0.1) and r2 == pytest.approx(1.0)


def test_ganalyze_run_learns_theta_and_reports_its_response(tiny_cfg):
    cfg = tiny_cfg(*EVAL_TINY, method="ganalyze")
    metrics = train(cfg)
    out = f"{cfg.paths.output_dir}/{cfg.run_name}"
    directions = Directions.load(f"{out}/directions.pt")
    assert isinstance(directions.directions, VectorDirections) and directions.num_directions == 1
    assert {"assessor_slope", "assessor_r2", "assessor_ceiling_slope", "assessor_slope_in_range",
            "change_at_r/x", "change_at_r/hue"} <= set(metrics)
    assert metrics["assessor_range_lo"] <= metrics["assessor_range_hi"]
    # The end-of-run evaluation measures the direction on the range it was trained on.
    assert directions.meta["alpha_range"] == 0.5
    report = json.loads(open(f"{out}/evaluation.json").read())
    assert report["settings"]["alpha"] == 0.25 and report["settings"]["rca"]["shift_scale"] == 0.5
    ckpt = torch.load(f"{out}/checkpoints/last.ckpt", weights_only=False)
    assert not any(k.startswith(("generator.", "assessor.")) for k in ckpt["state_dict"])
    saved = json.loads(open(f"{out}/metrics.json").read())["metrics"]
    assert saved["assessor_slope"] == metrics["assessor_slope"]
    assert __import__("pathlib").Path(f"{out}/assessor_response.png").is_file()


def test_ganalyze_logs_its_response_plot_to_a_real_wandb_logger(tiny_cfg):
    """The plots without a caption reach W&B (offline): Lightning's log_image refuses
    caption=None, which once failed every GANalyze run under logger=wandb at its end."""
    cfg = tiny_cfg("logger=wandb", method="ganalyze")
    train(cfg)
    out = __import__("pathlib").Path(f"{cfg.paths.output_dir}/{cfg.run_name}")
    assert (out / "assessor_response.png").is_file() and (out / "directions.pt").is_file()


def test_class_dependent_needs_a_conditional_generator():
    with pytest.raises(ValueError, match="needs a conditional generator"):
        GANalyze(random_generator(latent_dim=8, width=8), class_dependent=True)


def test_class_dependent_variant_has_one_theta_per_class():
    # A conditional StyleGAN2 (NVIDIA-style class embedding), edited in Z: classes go through
    # the Generator interface, forward(latent, y).
    generator = random_generator("stylegan2", resolution=32, style_dim=8, n_mlp=1,
                                 channels=[8, 8, 8, 8], c_dim=3, space="z")
    module = GANalyze(generator, regressor="shapes_regressor32.pt", class_dependent=True)
    assert module.directions.num_directions == 3
    latent, y = generator.draw(6, torch.Generator().manual_seed(0))
    batch = {"latent": latent, "y": y, "seed": torch.tensor(5)}
    loss = module.loss(batch)
    loss.backward()
    assert module.directions.theta.grad.abs().sum(1).gt(0).all()  # every class's theta learns


@pytest.mark.parametrize("override, message", [
    ("method.factor=rotation", "is circular, read it as one of"),
    ("method.alpha_range=0", "alpha_range must be positive"),
    ("method.regressor=missing.pt", "regressor weights not found"),
])
def test_bad_ganalyze_settings(tiny_cfg, override, message):
    with pytest.raises(Exception, match=message):
        train(tiny_cfg(override, method="ganalyze"))
