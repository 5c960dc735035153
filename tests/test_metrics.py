"""Metrics on cases with known answers: a synthetic generator whose latent axes are the world's
factors, random directions, identical directions; the shipped regressor against its targets."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.world import FACTORS, ShapesWorld
from directions import LinearDirections
from generators.base import Generator
from metrics.attributes import AttributeScores
from metrics.curves import bounded_response
from metrics.distances import LPIPSUnavailable, lap1, make_lpips
from metrics.effects import EffectMatrix, summarise
from metrics.evaluation import EvaluationSettings, evaluate_directions
from metrics.rca import RCASettings, reconstructor_accuracy
from regressors.attributes import load_regressor


class FactorGenerator(Generator):
    """Latent axis i sets factor i of the world through the normal CDF (uniform factors)."""

    name, z_dim, resolution = "factor_generator", 6, 32

    def __init__(self) -> None:
        super().__init__()
        self.world = ShapesWorld(32)
        self.register_buffer("anchor", torch.zeros(1))
        self.sha256 = "factor-generator"

    def factors(self, z: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        shape = (u[:, 0] * 3).floor().clamp(0, 2)
        return torch.cat([shape[:, None], u[:, 1:]], 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.world.render(self.factors(z))


@pytest.fixture(scope="module")
def regressor():
    return load_regressor("shapes_regressor32.pt")


def test_shipped_regressor_meets_its_targets(regressor):
    world = ShapesWorld(32)
    factors = world.sample_factors(512, generator=torch.Generator().manual_seed(123))
    scores = AttributeScores(regressor.factor_names, [t.kind for t in regressor.targets])
    scores.update(regressor.predict(world.render(factors))["values"], factors,
                  regressor.label_mask(factors))
    result = scores.compute()
    assert result["acc_shape"] >= 0.98
    for name in ("scale", "rotation", "x", "y", "hue"):
        assert result[f"r2_{name}"] >= 0.95, (name, result)
    assert regressor.factor_names == list(FACTORS)


def test_summary_of_a_known_effect_matrix():
    effects = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.2, 0.0]])
    s = summarise(effects, threshold=0.6, min_effect=0.1)
    assert s["coverage"] == 2  # factor 0 by direction 0, factor 1 by direction 2 (purity 1)
    assert s["best_direction"] == [0, 2, None]
    assert s["per_factor_purity"] == pytest.approx([1.0, 1.0, 0.5])
    assert s["per_factor_gap"] == pytest.approx([1.0, 0.6, 1.0])
    assert s["focus"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)  # each direction's top share
    assert summarise(torch.tensor([[0.3, 0.1, 0.0]]))["focus"] == pytest.approx(0.75)
    # pure but weak: 0.05 spreads per unit step is 0.075 at step 1.5 (too weak to see), 0.15 at 3
    assert summarise(torch.tensor([[0.05, 0.0]]), step=1.5)["coverage"] == 0
    assert summarise(torch.tensor([[0.05, 0.0]]), step=3.0)["coverage"] == 1


def _readings(value: torch.Tensor, cls: torch.Tensor) -> dict:
    """A regressor's decoded predictions of a continuous factor and a 3-class one."""
    return {"values": torch.stack([value, cls.float()], 1),
            "valid": torch.ones(len(value), 2, dtype=torch.bool),
            "probs": {"kind": torch.nn.functional.one_hot(cls, 3).float()}}


def test_effects_are_read_in_units_of_each_factors_spread():
    """Two independent samples differ by 1/3 in a uniform value and by 2/3 in a balanced
    3-class factor. A direction that moves the value by half its spread (1/6) and flips the
    class in a sixth of the samples (as much in the factors' own units) turns the value mostly
    (purity 2/3 in spreads); in the factors' own units it read as a tie (1/2), no coverage."""
    rng = torch.Generator().manual_seed(0)
    n = 40000
    value, cls = torch.rand(n, generator=rng), torch.randint(3, (n,), generator=rng)
    effect = EffectMatrix(3, ["value", "kind"], ["continuous", "categorical"], step=2.0)
    before = _readings(value, cls)
    for chunk in range(4):  # batches, as the evaluation feeds them
        effect.observe({"values": before["values"][chunk::4], "valid": before["valid"][chunk::4],
                        "probs": {"kind": before["probs"]["kind"][chunk::4]}})
    assert effect.spread().tolist() == pytest.approx([1 / 3, 2 / 3], abs=0.01)
    # direction 0 draws the value anew, direction 1 the class
    effect.update(0, before, _readings(torch.rand(n, generator=rng), cls), alpha=1.0)
    effect.update(1, before, _readings(value, torch.randint(3, (n,), generator=rng)), alpha=1.0)
    flip = torch.rand(n, generator=rng) < 1 / 6
    moved = value + torch.where(value < 0.5, 1 / 6, -1 / 6)
    effect.update(2, before, _readings(moved, torch.where(flip, (cls + 1) % 3, cls)), alpha=2.0)
    raw, scaled = effect.raw_matrix(), effect.matrix()
    assert raw[2].tolist() == pytest.approx([1 / 12, 1 / 12], abs=0.005)  # per unit step
    assert scaled[0].tolist() == pytest.approx([1.0, 0.0], abs=0.03)  # a new draw: 1 spread
    assert scaled[1].tolist() == pytest.approx([0.0, 1.0], abs=0.03)
    assert scaled[2].tolist() == pytest.approx([0.25, 0.125], abs=0.01)
    summary = effect.compute()
    assert summary["coverage"] == 2 and summary["best_direction"] == [0, 1]
    assert summarise(scaled[2:], step=2.0)["per_factor_purity"][0] == pytest.approx(2 / 3, abs=0.02)
    assert summarise(scaled[2:], step=2.0)["coverage"] == 1
    assert summarise(raw[2:], step=2.0)["per_factor_purity"][0] == pytest.approx(0.5, abs=0.03)
    assert summarise(raw[2:], step=2.0)["coverage"] == 0


def test_effect_matrix_without_pairs_keeps_the_factors_units():
    effect = EffectMatrix(1, ["value", "kind"], ["continuous", "categorical"])
    one = _readings(torch.tensor([0.2]), torch.tensor([1]))
    effect.observe(one)  # a batch of one sample: no pair to read a spread from
    effect.update(0, one, _readings(torch.tensor([0.5]), torch.tensor([1])), alpha=1.0)
    assert effect.spread().tolist() == [1.0, 1.0]
    assert effect.matrix()[0].tolist() == pytest.approx([0.3, 0.0])


def test_coordinate_directions_of_a_factor_generator_are_pure(regressor):
    generator = FactorGenerator()
    settings = EvaluationSettings(samples=96, alpha=1.0, batch_size=96, fid=False,
                                  rca=RCASettings(steps=0, shift_scale=6.0, min_shift=0.5))
    coordinate = LinearDirections(6, 6, init="identity", trainable=False)
    result = evaluate_directions(coordinate, generator, regressor, settings, progress=False)
    assert result["metrics"]["coverage"] == 6
    assert result["best_direction"] == [0, 1, 2, 3, 4, 5]
    assert result["metrics"]["purity"] > 0.85
    assert result["metrics"]["samples"] == 96

    random = LinearDirections(6, 6, init="randn", trainable=False, init_seed=0)
    scored = evaluate_directions(random, generator, regressor, settings, progress=False)
    assert scored["metrics"]["purity"] < result["metrics"]["purity"] - 0.3
    assert scored["metrics"]["coverage"] < 6


def test_rca_of_identical_directions_is_chance():
    generator = FactorGenerator()
    same = LinearDirections(6, 4, init="identity", trainable=False)
    with torch.no_grad():
        same.weight.copy_(torch.tensor([1.0, 1, 0, 0, 0, 0]).expand(4, 6))
    settings = RCASettings(steps=100, batch_size=32, eval_samples=384, shift_scale=6.0, min_shift=0.5)
    chance = reconstructor_accuracy(same, generator, settings, progress=False)["rca"]
    assert abs(chance - 0.25) < 0.08
    distinct = LinearDirections(6, 4, init="identity", trainable=False)
    assert reconstructor_accuracy(distinct, generator, settings, progress=False)["rca"] > chance + 0.15


def test_lap1_is_zero_on_equal_images_and_grows_with_the_difference():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.all(lap1(x, x) == 0)
    assert torch.all(lap1(x, x + 0.2) > lap1(x, x + 0.1))


def test_lpips_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSUnavailable, match="alexnet.*lap1"):
        make_lpips("alex")


def test_bounded_response_separates_the_range_from_the_direction():
    alphas = torch.linspace(-0.5, 0.5, 11)
    base = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    # A perfect step on a score that cannot leave [0, 1]: the mean slope is capped near 0.8,
    # the ceiling says so, and where the target stays in range the slope is 1.
    perfect = (base[:, None] + alphas).clamp(0, 1) - base[:, None]
    fit = bounded_response(alphas, base, perfect)
    assert 0.77 < fit["slope"] < 0.81 and fit["ceiling_slope"] == pytest.approx(fit["slope"], abs=0.02)
    assert fit["slope_in_range"] == pytest.approx(1.0, abs=1e-3) and fit["r2_in_range"] > 0.999
    # Half the step everywhere: the in-range slope tells the direction is too short.
    half = 0.5 * alphas.expand_as(perfect)
    fit = bounded_response(alphas, base, half)
    assert fit["slope_in_range"] == pytest.approx(0.5, abs=1e-3) and fit["ceiling_slope"] > 0.75


def test_auto_steps_follow_the_range_the_directions_were_trained_on():
    settings = EvaluationSettings.from_dict({"alpha": "auto", "rca": {"shift_scale": "auto"}})
    voynov = settings.resolve(6.0)
    assert voynov.alpha == 3.0 and voynov.rca.shift_scale == 6.0 and voynov.rca.min_shift == 0.5
    with pytest.raises(ValueError, match="needs the directions' alpha range"):
        settings.resolve(None)  # an unknown range is never silently Voynov's 6
    ganalyze = settings.resolve(0.5)
    assert ganalyze.alpha == 0.25 and ganalyze.rca.shift_scale == 0.5
    assert EvaluationSettings(alpha=1.5).resolve(0.5).alpha == 1.5  # a given number is kept
    with pytest.raises(ValueError, match=r"evaluation.settings.alpha='big': expected a finite "
                                         r"number > 0 \(or auto\)"):
        EvaluationSettings.from_dict({"alpha": "big"})
