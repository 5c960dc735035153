"""S space (StyleSpace, Wu et al., CVPR 2021), ``generator.space=s``: every method runs in it,
through train.py, on a tiny random StyleGAN2; what each closed-form method means there is
checked against its definition."""
from __future__ import annotations

import pytest
import torch
from conftest import EVAL_TINY, TINY, compose_cfg

from directions import Directions
from generators import random_generator
from lightning_modules.fit_free.sefa import sefa_directions
from train import train

S = ["generator=stylegan2_random", "generator.space=s"]
TINY_GENERATOR = dict(init_seed=0, style_dim=16, n_mlp=2, channels=[16, 16, 16, 8])
FIT_FREE = [t for t in TINY if not t.startswith(("trainer.max_steps", "method.traversal.every"))]
OVERRIDES = {
    "voynov": ["method.num_directions=4"],
    "warped": ["method.num_directions=4"],
    "ganalyze": [],
    "steerability": [],
    "eye": ["method.lambda_disc=0"],
    "sefa": ["method.num_directions=4"],
    "ganspace": ["data.batch_size=50", "method.samples=200", "method.num_directions=4"],
    "interfacegan": ["data.batch_size=100", "method.samples=400", "method.ratio=0.05",
                     "method.factors=[scale,x]"],
    "lowrankgan": ["method.samples=2", "data.val_batches=1", "method.jacobian_size=16",
                   "method.num_directions=2"],
    "plumerault": ["data.batch_size=4", "data.val_batches=2", "method.samples=8",
                   "method.strengths=[1,2]", "method.steps=4", "method.eval_samples=8",
                   "method.eval_points=5", "method.fit_steps=50", "method.drop=0.25"],
}
OVERRIDES["stylespace"] = ["method.samples=200", "data.batch_size=50", "method.positives=10"]
LEARNED = ("voynov", "warped", "ganalyze", "steerability", "eye")


def run(tmp_path, method, *extra):
    base = TINY if method in LEARNED else FIT_FREE
    cfg = compose_cfg([f"method={method}", "run_name=s", *base, *S, *OVERRIDES[method], *extra], tmp_path)
    metrics = train(cfg)
    return Directions.load(tmp_path / "s" / "directions.pt"), metrics


@pytest.mark.parametrize("method", list(OVERRIDES))
def test_every_method_runs_in_s(tmp_path, method):
    made, _ = run(tmp_path, method)
    g = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    assert made.meta["space"] == "s" and made.meta["generator"]["latent_dim"] == g.latent_dim
    latent = g.sample(2, torch.Generator().manual_seed(0))
    moved = made.directions.shift(latent, 0, 1.0)
    assert moved.shape == latent.shape and not torch.equal(moved, latent)


@pytest.mark.parametrize("layers", ["all", "coarse"])
def test_sefa_in_s_is_a_per_layer_factorisation(tmp_path, layers):
    """SeFa in S: the eigenvectors of the block-diagonal A^T A (one block per convolution's
    weight), each zero outside its layer's channels, ranked together; ToRGB layers left out."""
    made, metrics = run(tmp_path, "sefa", f"method.layers={layers}")
    g = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    # each direction as a full S vector (a layer range's set lives on its layers' channels)
    vectors = torch.cat([made.directions.shift(torch.zeros(1, g.latent_dim), k, 1.0)
                         for k in range(made.num_directions)])
    convs = [i for i, layer in enumerate(g.style_layers()) if layer.kind == "conv"
             and i in g.layers(layers)]
    expected = []
    for i in convs:
        mod = g.style_modules()[i]
        w = (mod.weight[0] * mod.scale).permute(0, 2, 3, 1).reshape(-1, mod.weight.shape[2])
        v, e = sefa_directions(w)
        expected += [(float(e[k]), i, v[k]) for k in range(len(e))]
    expected.sort(key=lambda t: -t[0])
    slices = g.style_slices()
    for row, (value, i, v) in zip(vectors, expected[:4]):
        assert torch.allclose(row[slices[i]].abs(), v.abs(), atol=1e-5)
        assert row.norm() == pytest.approx(1.0, abs=1e-5)
        outside = torch.ones(g.latent_dim, dtype=torch.bool)
        outside[slices[i]] = False
        assert row[outside].abs().max() == 0
    assert metrics["eigenvalue_0"] == pytest.approx(expected[0][0], rel=1e-5)
    if layers != "all":
        assert made.directions.channels == g.style_channels(g.layers(layers))
        assert made.latent_dim == len(made.directions.channels)


def test_a_layer_range_in_s_moves_its_channels_only(tmp_path):
    """Voynov with method.layers=coarse in S learns directions on the coarse style layers'
    channels; the file records them, loads back, refuses another space, and the evaluation's
    baselines live on the same channels."""
    made, _ = run(tmp_path, "voynov", "method.layers=coarse", *EVAL_TINY)
    g = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    channels = g.style_channels(g.layers("coarse"))
    assert made.directions.channels == channels and made.latent_dim == len(channels)
    latent = g.sample(3, torch.Generator().manual_seed(0))
    moved = made.directions.shift(latent, 1, 2.0)
    changed = (moved != latent).any(0).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(channels)
    codes = made.directions.code(latent)
    assert codes.shape == (3, made.num_directions)
    # the file holds the channels; another view of the generator is refused
    again = Directions.load(tmp_path / "s" / "directions.pt", generator=g)
    assert torch.equal(again.directions.shift(latent, 1, 2.0), moved)
    w = random_generator("stylegan2", space="w", **TINY_GENERATOR)
    with pytest.raises(ValueError, match="space 's' in the file vs 'w' now"):
        Directions.load(tmp_path / "s" / "directions.pt", generator=w)
    report = (tmp_path / "s" / "evaluation.json").read_text()
    assert '"random"' in report and '"coordinate"' in report


def test_channel_sets_check_their_latents():
    from directions import LinearDirections

    d = LinearDirections(3, 2, init_seed=0).on_channels([1, 4, 6])
    with pytest.raises(ValueError, match="channels of S latents"):
        d.shift(torch.zeros(2, 5), 0, 1.0)
    with pytest.raises(ValueError, match="3 coordinates for a set of latent size 2"):
        LinearDirections(2, 2).on_channels([0, 1, 2])
    with pytest.raises(ValueError, match="increasing"):
        LinearDirections(2, 2).on_channels([3, 1])
    moved = d.shift(torch.zeros(1, 8), 0, 1.0).detach()
    assert moved[0, [0, 2, 3, 5, 7]].abs().sum() == 0 and float(moved.norm()) == pytest.approx(1.0)


def test_stylespace_ranks_the_channels_its_positives_move(tmp_path):
    """method=stylespace: each factor's channels ranked by |mean of positives - mean| / std of
    positives, directions that are signed unit channel vectors with alpha in population std."""
    from lightning_modules.fit_free.stylespace import channel_relevance

    made, metrics = run(tmp_path, "stylespace", "method.factors=[x,scale]", "method.per_factor=3",
                        "method.positives=20", "method.samples=200", "data.batch_size=50")
    assert made.meta["method"] == "stylespace" and made.num_directions == 6
    d = made.directions
    assert ((d.basis != 0).sum(1) == 1).all() and torch.allclose(d.basis.abs().sum(1), torch.ones(6))
    assert (d.values[:3][:-1] >= d.values[:3][1:]).all() and (d.scales > 0).all()
    assert metrics["x/channel_0"] == int(d.basis[0].abs().argmax())
    # the relevance itself: a channel that the positives shift far, in units of their spread
    positives = torch.tensor([[5.0, 0.0], [5.2, 1.0], [4.8, -1.0]])
    relevance, sign = channel_relevance(positives, torch.zeros(2), torch.ones(2))
    assert relevance[0] > 20 and relevance[1] == 0 and sign[0] == 1


@pytest.mark.parametrize("overrides, message", [
    (["generator.space=w"], "run it with generator.space=s"),
    (["method.positives=500"], "positives=500: take 2..100"),
    (["method.factors=[rotation]"], "rotation' is circular"),
])
def test_stylespace_refuses_bad_settings_before_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path, "stylespace", "method.samples=200", "data.batch_size=50", *overrides)


def test_stylespace_takes_user_labelled_positives(tmp_path):
    """positive_seeds={attr: [seeds]}: the seeds' styles are the positives (no regressor); a
    channel that the labelled seeds share far from the population ranks first."""
    g = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    seeds = [3, 17, 42, 7]
    made, metrics = run(tmp_path, "stylespace", "method.samples=200", "data.batch_size=50",
                        "method.per_factor=2", "method.regressor=none_needed.pt",
                        f"method.positive_seeds={{mine: {seeds}}}".replace(" ", ""))
    assert made.num_directions == 2 and "mine/channel_0" in metrics
    positives = torch.cat([g.draw(1, torch.Generator().manual_seed(s))[0] for s in seeds])
    population = g.sample(200, torch.Generator().manual_seed(123))
    relevance = (positives.mean(0) - population.mean(0)).abs() / positives.std(0)
    top = int(made.directions.basis[0].abs().argmax())
    assert relevance[top] >= relevance.quantile(0.95)  # the population differs (another draw)
    with pytest.raises(ValueError, match="at least two different seeds"):
        run(tmp_path / "bad", "stylespace", "method.samples=200", "data.batch_size=50",
            "method.positive_seeds={mine:[3,3]}")


def test_stylespace_gradient_maps_rank_the_channels_acting_on_a_region(tmp_path):
    """procedure=gradient: each channel's share of |d image / d s_u| inside the region, averaged
    over the first gradient_samples styles; the top channels are the region's."""
    from lightning_modules.fit_free.lowrankgan import image_jacobian, region_mask

    region = [0.0, 0.5, 0.0, 0.5]
    made, metrics = run(tmp_path, "stylespace", "method.procedure=gradient", "method.per_factor=3",
                        f"method.region=[{','.join(map(str, region))}]", "method.jacobian_size=8",
                        "method.gradient_samples=2", "method.samples=100", "data.batch_size=50")
    assert made.num_directions == 3 and metrics["region/channel_0"] == int(made.directions.basis[0].abs().argmax())
    g = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    mask = region_mask(region, g.resolution, 8).flatten()
    style = g.sample(1, torch.Generator().manual_seed(0))[0]  # another style than the run's
    jac = image_jacobian(g, style, 8, mode="forward").abs().double()
    share = jac[mask].sum(0) / jac.sum(0)
    top = made.directions.basis.abs().argmax(1)
    # the chosen channels act mostly inside the region on another style too
    assert share[top].mean() > share.mean()
    assert float(made.directions.values[0]) >= float(made.directions.values[-1]) > 0.25
