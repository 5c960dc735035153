"""Widening a trained StyleGAN2: the same images, more channels, and training goes on."""
import pytest
import torch
from conftest import compose_cfg

from generators import load_generator
from generators.pretrain import export_checkpoint
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from generators.widen import widen_checkpoint, widen_discriminator_state, widen_state
from train import train

TINY = dict(resolution=32, style_dim=8, n_mlp=2, channels=[8, 8, 6, 4])
TINY_STYLEGAN = ["experiment=pretrain_stylegan2", "run_name=sg", "logger=none", "data.batch_size=4",
                 "trainer.max_steps=2", "method.generator.style_dim=8",
                 "method.generator.n_mlp=2", "method.generator.channels=[8,8,6,4]",
                 "method.discriminator.channels=[8,8,6,4]",
                 "method.sample_every_n_steps=0", "trainer.enable_progress_bar=false"]


def _tiny_trained_like() -> StyleGAN2Generator:
    torch.manual_seed(0)
    g = StyleGAN2Generator(**TINY)
    with torch.no_grad():  # biases and noise strengths away from their zero init, as after training
        for name, p in g.named_parameters():
            if "bias" in name or "noise" in name:
                p.normal_(0, 0.1)
    return g.eval()


@pytest.mark.parametrize("wide", [[16, 12, 6, 4], [32, 16, 12, 8]])
def test_widening_keeps_the_images_and_lets_new_channels_learn(wide):
    g = _tiny_trained_like()
    big = StyleGAN2Generator(**{**TINY, "channels": wide}).eval()
    big.load_state_dict(widen_state(g.state_dict(), TINY["channels"], wide,
                                    torch.Generator().manual_seed(0)))
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(big(z), g(z), atol=1e-5)
    # the zero columns that read the new channels get gradients at once
    big(z).square().mean().backward()
    grad = big.to_rgb1.conv.weight.grad[:, :, TINY["channels"][0]:]
    assert grad.abs().sum() > 0


def test_widening_the_discriminator_keeps_its_scores_and_lets_new_channels_learn():
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(32, TINY["channels"])
    with torch.no_grad():
        for name, p in d.named_parameters():
            if "bias" in name:
                p.normal_(0, 0.1)
    wide = [8, 16, 12, 8]
    big = StyleGAN2Discriminator(32, wide)
    big.load_state_dict(widen_discriminator_state(d.state_dict(), TINY["channels"], wide,
                                                  torch.Generator().manual_seed(0)))
    x = torch.randn(8, 3, 32, 32)
    assert torch.allclose(big(x), d(x), atol=1e-5)
    big(x).sum().backward()  # the zero columns reading the new 8 px channels learn at once
    assert big.convs[3].conv2[1].weight.grad[:, TINY["channels"][1]:].abs().sum() > 0
    with pytest.raises(ValueError, match="4 px"):  # the minibatch-stddev level must stay
        widen_discriminator_state(d.state_dict(), TINY["channels"], [16, 16, 12, 8],
                                  torch.Generator())


def test_widening_refuses_to_shrink():
    g = _tiny_trained_like()
    with pytest.raises(ValueError, match="only grow"):
        widen_state(g.state_dict(), TINY["channels"], [4, 8, 6, 4], torch.Generator())


def test_widened_checkpoint_resumes_training(tmp_path):
    train(compose_cfg(TINY_STYLEGAN, tmp_path))
    last = tmp_path / "sg/checkpoints/last.ckpt"
    wide_ckpt = widen_checkpoint(last, tmp_path / "wide.ckpt", [16, 8, 8, 4])
    with pytest.raises(FileExistsError):  # nothing already written is overwritten
        widen_checkpoint(last, wide_ckpt, [16, 8, 8, 4])
    narrow = load_generator(export_checkpoint(last, tmp_path / "narrow.pt", samples=False))
    wide = load_generator(export_checkpoint(wide_ckpt, tmp_path / "wide.pt", samples=False))
    assert wide.channels == [16, 8, 8, 4]
    z = narrow.sample(3)
    assert torch.allclose(wide(z), narrow(z), atol=1e-5)
    # training goes on from the widened state, with the wider config
    train(compose_cfg(TINY_STYLEGAN + ["trainer.max_steps=4", f"ckpt_path={wide_ckpt}",
                                       "method.generator.channels=[16,8,8,4]"], tmp_path))
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 8 and ckpt["generator_config"]["channels"] == [16, 8, 8, 4]


def test_widened_discriminator_checkpoint_resumes_training(tmp_path):
    train(compose_cfg(TINY_STYLEGAN, tmp_path))
    last = tmp_path / "sg/checkpoints/last.ckpt"
    with pytest.raises(ValueError, match="nothing to widen"):
        widen_checkpoint(last, tmp_path / "none.ckpt")
    wide_ckpt = widen_checkpoint(last, tmp_path / "dwide.ckpt", discriminator_channels=[8, 16, 12, 8])
    before, after = (torch.load(p, weights_only=True) for p in (last, wide_ckpt))
    assert after["discriminator_config"]["channels"] == [8, 16, 12, 8]
    assert after["generator_config"] == before["generator_config"]
    d_old = StyleGAN2Discriminator(**before["discriminator_config"])
    d_new = StyleGAN2Discriminator(**after["discriminator_config"])
    for d, ckpt in ((d_old, before), (d_new, after)):
        d.load_state_dict({k[len("discriminator."):]: v for k, v in ckpt["state_dict"].items()
                           if k.startswith("discriminator.")})
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(d_new(x), d_old(x), atol=1e-5)
    train(compose_cfg(TINY_STYLEGAN + ["trainer.max_steps=4", f"ckpt_path={wide_ckpt}",
                                       "method.discriminator.channels=[8,16,12,8]"], tmp_path))
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 8 and ckpt["discriminator_config"]["channels"] == [8, 16, 12, 8]


def test_widening_a_dcgan_checkpoint_is_refused(tmp_path):
    train(compose_cfg(["experiment=pretrain_dcgan", "run_name=dc", "logger=none",
                       "data.batch_size=4", "trainer.max_steps=1", "method.generator.width=8",
                       "method.generator.latent_dim=4", "method.discriminator.width=8",
                       "method.sample_every_n_steps=0", "trainer.enable_progress_bar=false"],
                      tmp_path))
    with pytest.raises(ValueError, match="not a StyleGAN2"):
        widen_checkpoint(tmp_path / "dc/checkpoints/last.ckpt", tmp_path / "w.ckpt", [16])
    assert not (tmp_path / "w.ckpt").exists()


def test_w_driven_input_starts_as_the_same_network_learns_and_survives_widening(tmp_path):
    train(compose_cfg(TINY_STYLEGAN, tmp_path))
    last = tmp_path / "sg/checkpoints/last.ckpt"
    grown = widen_checkpoint(last, tmp_path / "winput.ckpt", input_from_w=True)
    plain = load_generator(export_checkpoint(last, tmp_path / "plain.pt", samples=False))
    winput = load_generator(export_checkpoint(grown, tmp_path / "winput.pt", samples=False))
    assert winput.input_from_w and not plain.input_from_w  # the flag travels in the weights file
    z = plain.sample(3)
    assert torch.allclose(winput(z), plain(z), atol=1e-6)
    # training goes on with the new layer; the optimizer's states follow their parameters
    train(compose_cfg(TINY_STYLEGAN + ["trainer.max_steps=4", f"ckpt_path={grown}",
                                       "+method.generator.input_from_w=true"], tmp_path))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 8 and ckpt["generator_config"]["input_from_w"]
    assert ckpt["state_dict"]["generator.input_affine.weight"].abs().sum() > 0
    # and a network with the w-driven input widens with the same images
    g = StyleGAN2Generator(**TINY, input_from_w=True).eval()
    with torch.no_grad():
        g.input_affine.weight.normal_()
    big = StyleGAN2Generator(**{**TINY, "channels": [16, 8, 8, 4]}, input_from_w=True).eval()
    big.load_state_dict(widen_state(g.state_dict(), TINY["channels"], [16, 8, 8, 4],
                                    torch.Generator().manual_seed(0)))
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.allclose(big(z), g(z), atol=1e-5)
