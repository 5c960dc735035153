"""The encoder protocol of the ground-truth benchmark (evaluation/groundtruth.py) on a generator
whose factors are known exactly: the world itself, drawn from a latent (z -> factors -> render)."""
from __future__ import annotations

import pytest
import torch

from common.errors import UserError
from datamodules.world import FACTORS, ShapesWorld
from directions import Directions, LinearDirections, MLPWalk, baseline_set
from evaluation.groundtruth import ProtocolSettings, cannot_score, encoder_codes, generated_set, world_set
from generators import random_generator
from generators.base import Generator
from regressors.encoder import CodeEncoder


class WorldGenerator(Generator):
    """z (6-d) -> the world's factors (shape from z0 in thirds, the rest through the normal CDF)
    -> the world's render: coordinate axis k of z moves factor k and nothing else."""

    name, adapter, z_dim = "world_oracle", "test", 6

    def __init__(self, resolution: int = 16) -> None:
        super().__init__()
        self.resolution, self.world = resolution, ShapesWorld(resolution)
        self.regressor_spec = {"path": None, "factors": "world"}
        self.register_buffer("anchor", torch.zeros(1))

    def sample(self, n, generator=None, y=None):
        return torch.randn(n, self.z_dim, generator=generator)

    def forward(self, latent, y=None):
        u = torch.special.ndtr(latent)
        factors = u.clone()
        factors[:, 0] = (u[:, 0] * 3).floor().clamp(0, 2)
        return self.world.render(factors)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.slow
def test_the_encoder_reads_each_coordinate_back_from_the_worlds_own_renders():
    """Trained on generated images only, the encoder's code k follows the true factor k on the
    world's renders: the protocol's known answer."""
    generator = WorldGenerator(16)
    directions = Directions(baseline_set("id", 6, 6))
    settings = ProtocolSettings(generated=3000, steps=400, batch_size=64, world_samples=500)
    out = encoder_codes(directions, generator, settings, progress=False)
    codes, factors = out["codes"], out["factors"]
    assert codes.shape == (500, 6) and factors.shape == (500, len(FACTORS))
    assert out["encoder_r2"] > 0.5 and set(out["seconds"]) == {"generate", "encoder", "world"}
    for name in ("x", "y", "scale"):
        k = FACTORS.index(name)
        assert _correlation(codes[:, k], factors[:, k]) > 0.8, name
        others = [abs(_correlation(codes[:, j], factors[:, k])) for j in (3, 4, 1) if j != k]
        assert max(others) < 0.3, name


def test_codes_are_the_centred_projections_and_the_runs_repeat():
    generator = WorldGenerator(16)
    directions = Directions(LinearDirections(6, 3, init_seed=0))
    settings = ProtocolSettings(generated=300, batch_size=100, steps=1, world_samples=10)
    images, codes = generated_set(directions, generator, settings, progress=False)
    assert images.dtype == torch.uint8 and images.shape == (300, 3, 16, 16)
    assert codes.shape == (300, 3) and torch.allclose(codes.mean(0), torch.zeros(3), atol=1e-5)
    again = generated_set(directions, generator, settings, progress=False)
    assert torch.equal(again[0], images) and torch.equal(again[1], codes)
    world_images, factors = world_set(16, settings)
    assert world_images.shape == (10, 3, 16, 16) and factors.shape == (10, 6)
    assert torch.equal(world_set(16, settings)[1], factors)


def test_what_the_protocol_cannot_score_is_one_line_saying_why():
    world = WorldGenerator(16)
    assert "at least 2" in cannot_score(Directions(baseline_set("id", 6, 1)), world)
    assert "no coordinate" not in (cannot_score(Directions(baseline_set("id", 6, 2)), world) or "")
    assert "potential" in cannot_score(Directions(MLPWalk(6, 2)), world)
    other = random_generator("dcgan", latent_dim=8, resolution=16)
    assert "not a generator of the shapes world" in cannot_score(Directions(baseline_set("id", 8, 2)), other)
    with pytest.raises(UserError, match="cannot score these directions: .*at least 2"):
        encoder_codes(Directions(baseline_set("id", 6, 1)), world, ProtocolSettings(generated=10))
    with pytest.raises(UserError, match="benchmark.protocol.steps=0"):
        ProtocolSettings(steps=0).check()


def test_the_encoder_is_locatellos_four_blocks():
    encoder = CodeEncoder(5, resolution=32)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(UserError, match="multiple of 16"):
        CodeEncoder(5, resolution=24)


@pytest.mark.slow
def test_the_oracle_finds_the_axis_of_each_factor_and_the_ceiling_reads_the_world():
    """On the world generator (factor k = axis k of z), the least-squares direction of the
    regressor's x output is axis 3, of y axis 4, of scale axis 1; the regressor's own codes of
    the world's renders follow the true factors."""
    from evaluation.groundtruth import oracle_directions, output_names, regressor_codes
    from regressors.attributes import load_regressor

    generator = WorldGenerator(32)
    regressor = load_regressor("shapes_regressor32.pt")
    oracle = oracle_directions(generator, regressor, samples=1500)
    labels = oracle.meta["labels"]
    assert labels == output_names(regressor) and oracle.num_directions == len(labels)
    vectors = oracle.directions.vectors()
    for name, axis in (("x", 3), ("y", 4), ("scale", 1)):
        assert vectors[labels.index(name)].abs().argmax() == axis, name
        assert vectors[labels.index(name)][axis].abs() > 0.9, name
    images, factors = world_set(32, ProtocolSettings(world_samples=300))
    codes = regressor_codes(regressor, images)
    assert codes.shape == (300, len(labels))
    for name in ("x", "y"):
        assert _correlation(codes[:, labels.index(name)], factors[:, FACTORS.index(name)]) > 0.95
