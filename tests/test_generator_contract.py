"""The Generator contract, checked for every config in configs/generator/ (and each space a
style-based one offers): what every method, metric and tool relies on."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from generators import random_generator
from generators.base import IDENTITY_KEYS
from generators.stylegan2 import StyleGAN2Discriminator

ROOT = Path(__file__).resolve().parent.parent
# Your own generator (README): the example's config, found through Hydra's search path.
EXAMPLE = ROOT / "examples" / "my_generator"
sys.path.insert(0, str(EXAMPLE))
CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "generator").glob("*.yaml")) + ["my_generator"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small StyleGAN2 checkpoint in rosinality's layout, for the configs that need a file."""
    kwargs = dict(resolution=16, style_dim=16, n_mlp=2, channels=[16, 16, 8])
    g = random_generator("stylegan2", init_seed=3, frozen=False, **kwargs)
    d = StyleGAN2Discriminator(16, channels=[16, 16, 8])
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "g_optim": {}, "d_optim": {}, "args": argparse.Namespace(size=16, latent=16, n_mlp=2),
                "ada_aug_p": 0.0}, path)
    return path


@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory) -> Path:
    """A tiny BigGAN directory in pytorch-pretrained-biggan's layout (configs/generator/biggan)."""
    from test_formats_biggan import write_biggan

    path = tmp_path_factory.mktemp("biggan") / "biggan-tiny"
    write_biggan(path)
    return path


@pytest.fixture(scope="module")
def stylegan3_file(tmp_path_factory) -> Path:
    """A small StyleGAN3-T network pickle in NVIDIA's layout (configs/generator/stylegan3)."""
    from test_formats_nvidia import snapshot, write_snapshot
    from test_formats_stylegan3 import SMALL
    from test_formats_stylegan3 import Generator as NvidiaStyleGAN3

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = NvidiaStyleGAN3(16, **SMALL)
    path = tmp_path_factory.mktemp("sg3") / "network-snapshot-000000.pkl"
    write_snapshot(path, snapshot(g))
    return path


@pytest.fixture
def files(checkpoint, biggan_dir, stylegan3_file) -> dict[str, Path]:
    """The path each config that names a file of the user's is given here."""
    return {"stylegan2": checkpoint, "biggan": biggan_dir, "stylegan3": stylegan3_file}


def build(name: str, files: dict[str, Path], *overrides: str):
    extra = [f"generator.path={files[name]}"] if name in files else []
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["method=voynov", f"hydra.searchpath=[file://{EXAMPLE}]",
                                          f"generator={name}", *extra, *overrides])
    return instantiate(cfg.generator)


def views(name: str) -> list[str]:
    return ["z", "w", "w+", "s"] if name.startswith(("stylegan2", "stylegan3")) else ["z"]


CASES = [(name, space) for name in CONFIGS for space in views(name)]


@pytest.mark.parametrize("name, space", CASES)
def test_generator_contract(name, space, files):
    g = build(name, files, f"generator.space={space}")
    n = 3
    rng = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    latent, y = g.draw(n, rng())
    # shapes: latents in the editing space, images N x 3 x H x W
    assert tuple(latent.shape) == (n, *g.latent_shape)
    assert g.space == space and g.latent_shape[-1] == g.latent_dim
    with torch.no_grad():
        images = g(latent, y)
    assert images.shape == (n, 3, g.resolution, g.resolution)
    assert torch.isfinite(images).all()
    if g.adapter in ("dcgan", "biggan"):  # tanh output; StyleGAN2's is unbounded, as published
        assert images.abs().max() <= 1
    # determinism: the same latents give the same images (fixed noise), draws are seeded
    with torch.no_grad():
        assert torch.equal(g(latent, y), images)
    again, _ = g.draw(n, rng())
    assert torch.equal(again, latent)
    # frozen: no gradient on its weights, and train() keeps eval mode
    assert not any(p.requires_grad for p in g.parameters())
    g.train()
    assert not g.training
    # identity: every field a directions file and the cache must match
    identity = g.identity()
    assert set(IDENTITY_KEYS) <= set(identity) and identity["space"] == space
    assert identity["sha256"]
    # layers: groups resolve, every index in range
    groups = g.layer_groups()
    count = len(g.style_layers()) if space == "s" else g.num_layers
    assert groups["all"] == list(range(count)) == g.layers("all") == g.layers(None)
    # W+: an N x d latent is broadcast to every layer
    if space == "w+":
        with torch.no_grad():
            assert torch.allclose(g(latent[:, 0]), g(latent[:, 0:1].expand_as(latent)))
    # classes where present
    assert (y is None) == (g.num_classes is None)
    # a latent of the wrong size is refused with a message naming the expected shape
    with pytest.raises(ValueError, match="takes latents"):
        g(torch.zeros(n, g.latent_dim + 1))


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith("stylegan2")])
def test_s_space_is_the_styles_of_w_plus(name, files):
    """An S latent is every modulated layer's styles A(w) in synthesis order, ToRGB layers
    included: rendering the styles of W+ codes draws the W+ image, and an edit of one layer's
    slice changes only what that layer modulates."""
    wp, s = build(name, files, "generator.space=w+"), build(name, files, "generator.space=s")
    layers = s.style_layers()
    assert [layer.kind for layer in layers[:2]] == ["conv", "torgb"]
    assert len(layers) == (s.num_layers - 1) + s.num_layers // 2  # 3 x 3 convolutions + ToRGBs
    slices = s.style_slices()
    assert slices[0].start == 0 and slices[-1].stop == s.latent_dim
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    ws = wp.sample(3, torch.Generator().manual_seed(1))
    styles = torch.cat(s.styles(ws), dim=1)
    # the same draw in S is the styles of the same W+ codes
    assert torch.allclose(s.sample(3, torch.Generator().manual_seed(1)), styles)
    with torch.no_grad():
        assert torch.allclose(s(styles), wp(ws), atol=1e-6)
        # the last ToRGB's styles change the image, the 4 x 4 features do not move with them
        edited = styles.clone()
        edited[:, slices[-1]] += 1.0
        assert not torch.allclose(s(edited), s(styles))
        assert torch.equal(s.features(edited, 0), s.features(styles, 0))
    # a layer spec counts style layers; style_channels names their coordinates
    assert s.layers("0-1") == [0, 1]
    assert s.style_channels([1]) == list(range(slices[1].start, slices[1].stop))
    with pytest.raises(ValueError, match="in S \\(style layers\\)"):
        s.layers(len(layers))


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith(("stylegan2", "stylegan3"))])
def test_views_of_one_checkpoint_are_different_generators(name, files):
    z, w = build(name, files, "generator.space=z"), build(name, files, "generator.space=w")
    assert z.identity()["sha256"] == w.identity()["sha256"]
    assert z.identity() != w.identity()
    # The W view of a Z latent's mapping draws the same image.
    latent = z.sample(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(z(latent), w(w.mapping(latent)), atol=1e-5)


def test_layer_specs():
    g = random_generator("stylegan2", resolution=64, style_dim=8, n_mlp=1,
                         channels=[8, 8, 8, 8, 8], space="w+")
    assert g.num_layers == 10
    assert g.layers("coarse") == [0, 1, 2] and g.layers("middle") == [3, 4, 5, 6]
    assert g.layers("fine") == [7, 8, 9] and g.layers("2-4") == [2, 3, 4] and g.layers(5) == [5]
    with pytest.raises(ValueError, match="layers 0..9"):
        g.layers("8-12")
    with pytest.raises(ValueError, match="unknown layer spec"):
        g.layers("top")


def test_spaces_and_truncation_are_checked():
    with pytest.raises(ValueError, match="W, W\\+ and S need a style-based generator"):
        random_generator("dcgan", latent_dim=4, resolution=8, width=4, space="w")
    with pytest.raises(ValueError, match="no .s. space.*W, W\\+ and S need a style-based"):
        random_generator("dcgan", latent_dim=4, resolution=8, width=4, space="s")
    with pytest.raises(ValueError, match="input_from_w.*use generator.space=w or w\\+"):
        random_generator("stylegan2", resolution=8, style_dim=8, n_mlp=1, channels=[8, 8],
                         input_from_w=True, space="s")
    with pytest.raises(ValueError, match="use space w\\+"):
        random_generator("stylegan2", resolution=8, style_dim=8, n_mlp=1, channels=[8, 8],
                         space="w", truncation_psi=0.5, truncation_cutoff=2)
    g = random_generator("stylegan2", resolution=8, style_dim=8, n_mlp=1, channels=[8, 8],
                         space="w+", truncation_psi=0.0, truncation_cutoff=2)
    ws = g.sample(2, torch.Generator().manual_seed(0))
    # psi 0: the truncated layers sit at the mean w, the others are untouched
    assert torch.allclose(ws[:, :2], g.w_avg.expand(2, 2, -1))
    assert not torch.allclose(ws[:, 2:], g.w_avg.expand(2, 2, -1))


@pytest.mark.parametrize("name", CONFIGS)
def test_closed_form_hooks(name, files):
    """SeFa reads projection_weight (columns: the W or Z coordinates), GANSpace reads features."""
    g = build(name, files, "generator.space=w" if name.startswith(("stylegan2", "stylegan3")) else "generator.space=z")
    weight = g.projection_weight()
    assert weight.ndim == 2 and weight.shape[1] == g.latent_dim
    latent, y = g.draw(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = g.features(latent, 1, y)
    assert features.ndim == 4 and features.shape[0] == 2
    if g.style_based:  # a layer range reads only the convolutions those codes drive
        assert g.projection_weight("0-1").shape[0] < weight.shape[0]
        with torch.no_grad():  # the features are what the synthesis computes on the way
            last = g.features(latent, g.num_layers - 2, y)
        assert last.shape[-1] == g.resolution
