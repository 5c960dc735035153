import pytest
import torch

from generators import DCGANGenerator, SNDiscriminator, load_generator, random_generator, shipped_weights
from generators.weights import WEIGHTS_FORMAT


@pytest.fixture
def tiny():
    return random_generator(latent_dim=8, resolution=32, width=8)


def test_interface_shapes_range(tiny):
    z = tiny.sample(5)
    assert z.shape == (5, 8)
    x = tiny(z)
    assert x.shape == (5, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert tiny.space == "z" and tiny.num_layers == 1 and tiny.resolution == 32


def test_frozen_stays_frozen(tiny):
    assert all(not p.requires_grad for p in tiny.parameters())
    tiny.train()  # what Lightning does at the start of fit
    assert not tiny.training and all(not m.training for m in tiny.modules())
    z = tiny.sample(4)
    assert torch.equal(tiny(z), tiny(z))  # eval-mode batch norm: no batch dependence
    assert torch.allclose(tiny(z[:1]), tiny(z)[:1], atol=1e-6)


def test_deterministic_sampling(tiny):
    a = tiny.sample(3, generator=torch.Generator().manual_seed(7))
    b = tiny.sample(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert random_generator(latent_dim=8, width=8).sha256 == tiny.sha256  # same seed, same weights
    assert random_generator(latent_dim=8, width=8, init_seed=1).sha256 != tiny.sha256


def test_resolution_64_and_discriminator():
    g = DCGANGenerator(latent_dim=4, resolution=64, width=4)
    d = SNDiscriminator(resolution=64, width=4)
    x = g(torch.randn(2, 4))
    assert x.shape == (2, 3, 64, 64) and d(x).shape == (2,)
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(resolution=48)


def test_the_discriminator_goes_where_the_generator_goes():
    # Kept out of the module tree (not in the generator's state), it still follows .to():
    # the evaluation on a GPU scores the images with it there (measured: it stayed on the CPU).
    g = load_generator("dcgan_shapes32.pt")
    assert not any(k.startswith("discriminator") for k in g.state_dict())
    g.to(torch.float64)
    assert {p.dtype for p in g.discriminator.parameters()} == {torch.float64}
    x = g(g.sample(2, generator=torch.Generator().manual_seed(0)).double())
    assert x.dtype == torch.float64 and g.discriminator(x).dtype == torch.float64


def test_wrong_latent_size_is_refused(tiny):
    with pytest.raises(ValueError, match="N x 8"):
        tiny(torch.randn(2, 9))


def test_shipped_generator_loads_and_draws():
    assert "dcgan_shapes32.pt" in shipped_weights()
    g = load_generator("dcgan_shapes32.pt")
    x = g(g.sample(4, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, g.resolution, g.resolution) == (4, 3, 32, 32)
    assert g.sha256 and len(g.sha256) == 64
    assert g.discriminator is not None and g.discriminator(x).shape == (4,)
    assert all(not p.requires_grad for p in g.parameters())


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*Shipped weights"):
        load_generator(tmp_path / "nope.pt")
    # a directory exists, but is not a weights file: said so, not "not found"
    with pytest.raises(FileNotFoundError, match="is a directory; pass the weights file"):
        load_generator(tmp_path)


def test_wrong_format_names_keys(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": {}, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"holding a dict with keys \['epoch', 'state_dict'\]"
                                         r".*a Lightning checkpoint.*Supported formats"):
        load_generator(path)


def test_weights_that_do_not_fit(tmp_path, tiny):
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("to_rgb")}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "g.pt"
    torch.save({"format": WEIGHTS_FORMAT, "architecture": "dcgan",
                "generator_config": {"latent_dim": 8, "resolution": 32, "width": 8},
                "generator": state}, path)
    with pytest.raises(ValueError, match=r"missing keys \['to_rgb.weight', 'to_rgb.bias'\]"
                                         r".*unexpected keys \['extra.weight'\]"):
        load_generator(path)
