"""WarpedGANSpace: the training shift, eps sampling, a run end to end, bad settings."""
from __future__ import annotations

import pytest
import torch

from directions import Directions, RBFWarps
from lightning_modules.warped import sample_signed_eps
from train import train


def test_eps_is_half_positive_half_negative_within_range():
    eps = sample_signed_eps(64, torch.Generator().manual_seed(0), 0.5, 2.0)
    assert (eps > 0).sum() == 32 and (eps < 0).sum() == 32
    assert torch.all((eps.abs() >= 0.5) & (eps.abs() <= 2.0))


def test_warped_run_learns_warps_and_writes_them(tiny_cfg):
    cfg = tiny_cfg(method="warped")
    from train import instantiate_all

    module = instantiate_all(cfg)["module"]
    before = {k: v.detach().clone() for k, v in module.directions.state_dict().items()}
    metrics = train(cfg)
    directions = Directions.load(f"{cfg.paths.output_dir}/{cfg.run_name}/directions.pt")
    assert isinstance(directions.directions, RBFWarps) and directions.meta["method"] == "warped"
    after = directions.directions.state_dict()
    assert not torch.allclose(before["support"], after["support"])
    assert not torch.allclose(before["log_gamma"], after["log_gamma"])  # gamma is learned
    assert torch.equal(before["alphas"], after["alphas"])  # dipole weights fixed by default
    assert 0.0 <= metrics["rca"] <= 1.0


def test_training_shift_is_one_gradient_step(tiny_cfg):
    from train import instantiate_all

    module = instantiate_all(tiny_cfg(method="warped"))["module"]
    z = torch.randn(4, 8)
    k, eps = torch.tensor([0, 1, 2, 3]), torch.tensor([0.5, -1.0, 2.0, -3.0])
    shifted = module.train_shift(z, k, eps)
    assert torch.allclose((shifted - z).norm(dim=1), eps.abs(), atol=1e-5)
    grad = module.directions.gradient(z, k)
    cosine = torch.nn.functional.cosine_similarity(shifted - z, grad * eps.sign()[:, None])
    assert torch.allclose(cosine, torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("method.min_shift=7.0", "shift range cannot work"),
    ("method.num_dipoles=0", "method.num_dipoles=0: expected an integer >= 1"),
    ("method.traversal_step=0", "traversal_step must be positive"),
    ("method.gamma=-1", "gamma must be positive"),
])
def test_bad_warped_settings(tiny_cfg, override, message):
    with pytest.raises(Exception, match=message):
        train(tiny_cfg(override, method="warped"))
