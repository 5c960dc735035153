"""Plumerault et al.'s method (lightning_modules/fit_free/plumerault.py): the monotone fit on
planted data, the trajectories, and runs through train.py (one process, two DDP processes,
resume, refused settings)."""
import re

import pytest
import torch
from conftest import TINY, compose_cfg, run_script

from directions import BasisDirections, Directions
from generators import random_generator
from lightning_modules.fit_free.plumerault import (
    MonotonePiecewiseLinear,
    Plumerault,
    fit_monotone_direction,
    spearman_rows,
)
from train import train

FIT_FREE_TINY = [t for t in TINY if not t.startswith(("trainer.max_steps", "method.traversal.every"))]
# 8 trajectories of 2 strengths a side, 4 inversion steps a point, 8 held-out latents.
PLUM_TINY = ["data.batch_size=4", "data.val_batches=2", "method.samples=8",
             "method.strengths=[1,2]", "method.steps=4",
             "method.eval_samples=8", "method.eval_points=5",
             "method.fit_steps=50", "method.drop=0.25"]


def run_plumerault(tmp_path, *overrides, run_name="plum"):
    cfg = compose_cfg(["method=plumerault", f"run_name={run_name}", *FIT_FREE_TINY, *PLUM_TINY,
                       *overrides], tmp_path)
    return tmp_path / run_name, train(cfg)


def planted(relative: bool, n: int = 300, d: int = 12, seed: int = 0):
    """Points z, values t = g*(<u*, z>) (- g*(<u*, z0>)) + noise with a monotone, clearly
    non-linear g*, and a starting direction 60 degrees off u*."""
    gen = torch.Generator().manual_seed(seed)
    u_star = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    g_star = lambda s: 2 * torch.tanh(1.5 * s) + 0.2 * s  # noqa: E731 - a saturating factor
    z = torch.randn(n, d, generator=gen)
    anchors = torch.randn(n, d, generator=gen) if relative else None
    t = g_star(z @ u_star) - (g_star(anchors @ u_star) if relative else 0)
    t = t + 0.05 * torch.randn(n, generator=gen)
    off = torch.randn(d, generator=gen)
    off = torch.nn.functional.normalize(off - (off @ u_star) * u_star, dim=0)
    init = 0.5 * u_star + 0.75 ** 0.5 * off
    return z, t, anchors, u_star, init, g_star


# ---- the monotone fit ----------------------------------------------------------------------
@pytest.mark.parametrize("relative", [True, False])
def test_the_monotone_fit_recovers_a_planted_direction_and_g(relative):
    z, t, anchors, u_star, init, g_star = planted(relative)
    fit = fit_monotone_direction(z, t, init, anchors, knots=6, steps=300)
    assert abs(float(fit.direction.norm()) - 1) < 1e-9
    assert float(fit.direction.float() @ u_star) > 0.995 and fit.r2 > 0.98
    # a straight line (the baseline's model) cannot explain the saturation as well
    s = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    shape = fit.g(s) - fit.g(torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(shape, (g_star(s) - g_star(torch.zeros(1))).double(), atol=0.25)
    assert (fit.g.slopes > 0).all() and fit.g.slopes.max() / fit.g.slopes.min() > 3


def test_the_fit_is_deterministic_and_its_sign_follows_t():
    z, t, anchors, u_star, init, _ = planted(True, seed=1)
    a = fit_monotone_direction(z, t, init, anchors, steps=100)
    b = fit_monotone_direction(z, t, init, anchors, steps=100)
    assert torch.equal(a.direction, b.direction)
    flipped = fit_monotone_direction(z, -t, -init, anchors, steps=100)  # t grows the other way
    assert float(flipped.direction.float() @ u_star) < -0.99


def test_a_large_ridge_gives_the_t_weighted_mean_difference():
    gen = torch.Generator().manual_seed(2)
    d, n = 8, 400
    u_star = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    anchors = torch.randn(n, d, generator=gen)
    t = torch.randn(n, generator=gen)
    # the points follow u* with t, and wander along one other axis as much again
    z = anchors + t[:, None] * u_star + 2 * torch.randn(n, 1, generator=gen) * torch.eye(d)[0]
    z = z + 0.05 * torch.randn(n, d, generator=gen)
    mean_difference = torch.nn.functional.normalize((t[:, None] * (z - anchors)).sum(0), dim=0)
    init = mean_difference + 0.3 * torch.randn(d, generator=gen)
    heavy = fit_monotone_direction(z, t, init, anchors, knots=1, ridge=1e4)
    assert float(heavy.direction.float() @ mean_difference) > 0.999
    # without it, least squares predicts t exactly from the part of u* off the wandering axis
    plain = fit_monotone_direction(z, t, init, anchors, knots=1, ridge=0.0)
    off_axis = torch.nn.functional.normalize(u_star - u_star[0] * torch.eye(d)[0], dim=0)
    assert plain.r2 > 0.99 > heavy.r2 and float(plain.direction.float() @ off_axis) > 0.99


def test_piecewise_linear_g_is_increasing_whatever_its_parameters_and_inverts():
    g = MonotonePiecewiseLinear(torch.tensor([-1.0, 0.0, 0.5, 2.0]), slope=1.0, bias=0.3)
    with torch.no_grad():
        g.raw.copy_(torch.tensor([-5.0, 3.0, -1.0]))  # slopes from tiny to large
    s = torch.linspace(-4, 5, 200, dtype=torch.float64)
    y = g(s)
    assert (y[1:] > y[:-1]).all()
    assert torch.allclose(g.inverse(y), s, atol=1e-8)  # inside the knots and beyond both ends
    with pytest.raises(ValueError, match="strictly increasing"):
        MonotonePiecewiseLinear(torch.tensor([0.0, 0.0, 1.0]))


def test_spearman_rows():
    rows = torch.tensor([[0.0, 1, 2, 3], [3.0, 2, 1, 0], [0.0, 2, 1, 3]])
    assert torch.allclose(spearman_rows(rows), torch.tensor([1.0, -1.0, 0.8], dtype=torch.float64))


# ---- the trajectories ----------------------------------------------------------------------
def test_trajectories_start_at_z0_stay_in_the_ball_and_follow_the_edit():
    g = random_generator("dcgan", init_seed=0, latent_dim=8, width=8)
    method = Plumerault(edit="shift_x", strengths=[1, 2], steps=3, radius=1.0, samples=3)
    z0 = g.sample(3, generator=torch.Generator().manual_seed(0))
    latents, distance, psnr = method.trajectories(g, z0)
    assert latents.shape == (3, 5, 8) and distance.shape == psnr.shape == (3, 4)
    assert torch.equal(latents[:, 0], z0)
    assert (latents[:, 1:].norm(dim=-1) <= 8 ** 0.5 + 1e-4).all()  # radius 1 x sqrt(8)
    assert method.t.tolist() == [-2, -1, 1, 2]
    # each point is the warm-started inversion of the edit of G(z0): redo t = +1 by hand
    from editing.inversion import invert, norm_ball

    target, mask = method.edit.apply(g(z0), 1.0)
    first = invert(g, target, distance=method.image_distance, steps=3, lr=method.lr, starts=1,
                   init=z0, mask=mask, project=norm_ball(8 ** 0.5), progress=False)
    assert torch.allclose(latents[:, 3], first.latents, atol=1e-5)


# ---- through train.py ----------------------------------------------------------------------
def test_plumerault_runs_through_train_py(tmp_path):
    out, metrics = run_plumerault(tmp_path)
    made = Directions.load(out / "directions.pt")
    assert isinstance(made.directions, BasisDirections) and made.num_directions == 1
    assert made.meta["method"] == "plumerault" and made.meta["alpha_range"] == 2.0
    assert made.meta["config"]["fit_free"]["edit"] == "shift_x"
    basis = made.directions.basis[0]
    assert abs(float(basis.norm()) - 1) < 1e-5 and float(made.directions.scales[0]) > 0
    assert metrics["kept"] == 6 and metrics["dropped_share"] == 0.25  # floor(0.25 * 8) dropped
    for name in ("u", "baseline"):
        for what in ("monotone_share", "spearman", "spread", "effect"):
            assert f"{name}/{what}" in metrics
        assert 0 <= metrics[f"{name}/monotone_share"] <= 1
    assert metrics["eval_samples"] == 8 and metrics["psnr_mean"] > 0
    fit = torch.load(out / "plumerault_fit.pt", weights_only=True)
    assert torch.allclose(fit["direction"], basis, atol=1e-6)
    assert abs(float(fit["baseline"] @ basis) - metrics["cos_baseline"]) < 1e-5
    assert (fit["slopes"] > 0).all() and fit["kept"].numel() == 6
    assert (out / "plumerault_response.png").is_file() and (out / "traversal.png").is_file()
    state = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["fit_free/plumerault"]
    assert state["stats"]["latents"].shape == (8, 5, 8) and bool((state["stats"]["filled"] == 1).all())
    assert state["result"]["fit"]["edit"] == "shift_x"


def test_zoom_brightness_and_the_absolute_model_run(tmp_path):
    _, zoom = run_plumerault(tmp_path, "method.edit=zoom",
                             "method.strengths=[0.1,0.2]",
                             "method.model=absolute", run_name="zoom")
    assert "u/monotone_share" in zoom
    _, bright = run_plumerault(tmp_path, "method.edit=brightness",
                               "method.strengths=[0.05,0.1]",
                               "method.regressor=null", run_name="bright")
    assert "u/spread" in bright  # the mean pixel value needs no regressor


def test_w_space_of_a_style_based_generator(tmp_path):
    out, metrics = run_plumerault(tmp_path, "generator=stylegan2_random", "generator.space=w")
    made = Directions.load(out / "directions.pt")
    assert made.space == "w" and made.latent_dim == 16 and "u/spread" in metrics


@pytest.mark.slow
def test_killed_half_way_resumes_its_trajectories(tmp_path):
    whole, _ = run_plumerault(tmp_path, run_name="whole")
    half, _ = run_plumerault(tmp_path, "trainer.max_steps=1", run_name="half")
    assert not (half / "directions.pt").exists()
    state = torch.load(half / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["fit_free/plumerault"]
    assert state["seen"] == 4 and state["stats"]["filled"].tolist() == [1.0] * 4 + [0.0] * 4
    run_plumerault(tmp_path, "ckpt_path=last", run_name="half")
    a = Directions.load(whole / "directions.pt").directions
    b = Directions.load(half / "directions.pt").directions
    assert torch.allclose(a.basis, b.basis, atol=1e-6) and torch.allclose(a.scales, b.scales, atol=1e-6)


@pytest.mark.slow
def test_two_ddp_processes_give_the_one_process_direction(tmp_path):
    one, _ = run_plumerault(tmp_path, run_name="one")
    args = ["method=plumerault", "trainer=ddp_cpu", "run_name=two", *FIT_FREE_TINY, *PLUM_TINY]
    result = run_script(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a = Directions.load(one / "directions.pt").directions
    b = Directions.load(tmp_path / "outputs/two/directions.pt").directions
    # each process inverts the stream's batches it owns; the rows gathered in stream order
    assert torch.allclose(a.basis, b.basis, atol=1e-5) and torch.allclose(a.scales, b.scales, atol=1e-5)
    fa = torch.load(one / "plumerault_fit.pt", weights_only=True)
    fb = torch.load(tmp_path / "outputs/two/plumerault_fit.pt", weights_only=True)
    assert torch.equal(fa["kept"], fb["kept"]) and torch.allclose(fa["baseline"], fb["baseline"], atol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (["method.edit=rotate"], "edit='rotate' is not one of shift_x, shift_y, zoom, scale, brightness"),
    (["method.edit=colour"], "is not one of"),
    (["method.strengths=[2,1]"], "strictly increasing"),
    (["method.strengths=[0,1]"], "positive and strictly increasing"),
    (["method.strengths=[]"], "positive and strictly increasing"),
    (["method.drop=1.0"], "in \\[0, 1\\)"),
    (["method.drop=-0.1"], "in \\[0, 1\\)"),
    (["method.model=quadratic"], "model='quadratic'"),
    (["method.radius=0"], "radius"),
    (["method.steps=0"], "method.steps=0: expected an integer >= 1"),
    (["method.ridge=-1"], "ridge >= 0"),
    (["method.strengths=[4,20]"], "use strengths below 16"),
    (["method.edit=brightness", "method.strengths=[0.5,1.5]"],
     "below 1"),
    (["generator=stylegan2_random", "generator.space=w+"], "generator.space=z or w"),
])
def test_bad_settings_are_one_clear_error_before_work(tmp_path, overrides, message):
    with pytest.raises(Exception) as caught:  # Hydra wraps it; the CLI prints the cause alone
        run_plumerault(tmp_path, *overrides)
    cause = caught.value.__cause__ or caught.value
    assert isinstance(cause, ValueError) and re.search(message, str(cause)), str(cause)
    assert not (tmp_path / "plum" / "checkpoints").exists()
