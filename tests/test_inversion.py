"""Inversion (editing/inversion.py) and the shared image distance."""
from __future__ import annotations

import pytest
import torch

from editing.inversion import invert, mean_latent, norm_ball
from generators import random_generator
from metrics.distances import ImageDistance, gaussian_blur, lap1, laplacian_pyramid, psnr


@pytest.mark.parametrize("arch, kwargs, space", [
    ("dcgan", dict(latent_dim=8, resolution=16, width=8), "z"),
    ("stylegan2", dict(resolution=16, style_dim=16, n_mlp=2, channels=[16, 16, 8]), "w"),
])
def test_inversion_recovers_a_known_latent(arch, kwargs, space):
    generator = random_generator(arch, init_seed=0, space=space, **kwargs)
    z = generator.sample(3, generator=torch.Generator().manual_seed(5))
    result = invert(generator, generator(z), steps=200, starts=4, progress=False)
    assert result.latents.shape == z.shape and result.images.shape == (3, 3, 16, 16)
    assert (result.psnr > 40).all()
    assert ((result.latents - z).norm(dim=-1) / z.norm(dim=-1)).max() < 0.05


def test_inversion_keeps_the_best_start_and_its_projection():
    generator = random_generator("dcgan", init_seed=0, latent_dim=8, resolution=16, width=8)
    target = generator(generator.sample(2, generator=torch.Generator().manual_seed(1)))
    one = invert(generator, target, steps=5, starts=1, progress=False)
    four = invert(generator, target, steps=5, starts=4, progress=False)
    assert (four.distance <= one.distance + 1e-6).all()  # start 0 is among the four
    assert (one.start == 0).all()
    inside = invert(generator, target, steps=5, starts=2, project=norm_ball(0.5), progress=False)
    assert (inside.latents.norm(dim=1) <= 0.5 + 1e-5).all()
    # A warm start at the answer stays there.
    z = generator.sample(2, generator=torch.Generator().manual_seed(1))
    warm = invert(generator, target, steps=3, starts=1, init=z, lr=1e-4, progress=False)
    assert (warm.latents - z).abs().max() < 1e-2
    with pytest.raises(ValueError, match="expected N x 3 x 16 x 16"):
        invert(generator, target[:, :, :8], progress=False)
    with pytest.raises(ValueError, match="init: expected 2 x 8"):
        invert(generator, target, init=z[:1], progress=False)


def test_mean_latent_is_the_spaces_mean():
    generator = random_generator("stylegan2", init_seed=0, space="w+", resolution=16,
                                 style_dim=16, n_mlp=2, channels=[16, 16, 8])
    mean = mean_latent(generator, samples=256)
    assert mean.shape == (generator.num_layers, 16)
    assert torch.allclose(mean[0], mean[-1])  # every layer holds the same w


def test_lap1_is_zero_for_equal_images_and_weights_levels_as_stated():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert lap1(x, x.clone()).abs().max() == 0
    # A constant offset lives in the low-pass residual only: Lap1 is its mean |difference|.
    assert torch.allclose(lap1(x, x + 0.1, levels=4), torch.full((2,), 0.1), atol=1e-5)
    # The paper's form: sum_j 2^(2j) |L^j(x) - L^j(y)|_1 over the pixels of x, level j having
    # 4^-j of them (so a difference at a coarse level counts as much as one at a fine level).
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    lx, ly = laplacian_pyramid(x, 4), laplacian_pyramid(y, 4)
    assert [tuple(level.shape[-2:]) for level in lx] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    stated = sum(2 ** (2 * j) * (a - b).abs().flatten(1).sum(1) for j, (a, b) in enumerate(zip(lx, ly)))
    assert torch.allclose(lap1(x, y, levels=4), stated / x[0].numel(), rtol=1e-5)


def test_image_distance_terms_mask_and_blur():
    x, t = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    t[:, :, :, :4] = 1.0  # the left half differs by 1
    assert torch.allclose(ImageDistance(l2=1.0)(x, t), torch.full((2,), 0.5))
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 4:] = 1.0  # only the right half counts: equal there
    assert ImageDistance(l2=1.0, lap1=1.0)(x, t, mask).abs().max() == 0
    mask[..., :] = 0.0
    mask[..., :4] = 1.0  # only the left half: the mean over the valid pixels is 1
    assert torch.allclose(ImageDistance(l2=1.0)(x, t, mask), torch.ones(2))
    both = ImageDistance(l2=2.0, lap1=3.0)(x, t)
    assert torch.allclose(both, 2 * ImageDistance(l2=1)(x, t) + 3 * lap1(x, t))
    assert torch.allclose(gaussian_blur(t, 1.0).mean(), t.mean(), atol=1e-6)  # mass kept
    assert gaussian_blur(t, 0.0) is t
    assert ImageDistance.named("l2+lap1").weights == {"l2": 1.0, "lap1": 1.0, "lpips": 0.0}
    with pytest.raises(ValueError, match="unknown image distance"):
        ImageDistance.named("ssim")
    with pytest.raises(ValueError, match="one of them positive"):
        ImageDistance(l2=0.0)
    assert psnr(x, x + 0.02).round().tolist() == [40.0, 40.0]
