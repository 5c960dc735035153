"""The fit-free machinery (lightning_modules/fit_free/base.py) and SeFa, through train.py."""
import re

import pytest
import torch
from conftest import TINY, compose_cfg

from directions import BasisDirections, Directions
from generators import random_generator
from lightning_modules.fit_free.sefa import SeFa, sefa_directions
from train import train

FIT_FREE_TINY = [t for t in TINY if not t.startswith(("trainer.max_steps", "method.traversal.every"))]


def run_fit_free(tmp_path, method, *overrides, run_name="ff"):
    cfg = compose_cfg([f"method={method}", f"run_name={run_name}", *FIT_FREE_TINY, *overrides],
                      tmp_path)
    metrics = train(cfg)
    return tmp_path / run_name, metrics


# ---- SeFa ----------------------------------------------------------------------------------
def test_sefa_equals_the_svd_of_the_normalised_weight_and_is_sorted():
    weight = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    vectors, values = sefa_directions(weight)
    unit = weight / weight.norm(dim=1, keepdim=True)
    _, s, vh = torch.linalg.svd(unit.double(), full_matrices=False)
    assert torch.allclose(values.double(), s**2, rtol=1e-5)
    assert (values[:-1] >= values[1:]).all()
    # the same axes up to sign
    assert torch.allclose((vectors.double() * vh).sum(1).abs(), torch.ones(12, dtype=torch.float64), atol=1e-5)
    top3, _ = sefa_directions(weight, 3)
    assert torch.equal(top3, vectors[:3])


@pytest.mark.parametrize("generator,extra", [
    ("dcgan_random", []),
    ("stylegan2_random", ["generator.space=w"]),
    ("stylegan2_random", ["generator.space=w+", "method.layers=coarse"]),
])
def test_sefa_runs_through_train_py(tmp_path, generator, extra):
    out, metrics = run_fit_free(tmp_path, "sefa", f"generator={generator}",
                                "method.num_directions=4", *extra)
    made = Directions.load(out / "directions.pt")
    assert isinstance(made.directions, BasisDirections) and made.num_directions == 4
    assert made.meta["method"] == "sefa" and made.meta["alpha_range"] == 3.0
    values = made.directions.values
    assert (values[:-1] >= values[1:]).all() and metrics["eigenvalue_0"] == pytest.approx(float(values[0]))
    g = random_generator(generator.split("_")[0], init_seed=0,
                         **({"space": extra[0].split("=")[1]} if extra else {}),
                         **({"latent_dim": 8, "width": 8} if generator == "dcgan_random" else
                            {"style_dim": 16, "n_mlp": 2, "channels": [16, 16, 16, 8]}))
    layers = "coarse" if len(extra) > 1 else None
    expected, _ = sefa_directions(g.projection_weight(layers), 4)
    assert torch.allclose(made.directions.basis, expected, atol=1e-6)
    if layers:
        assert made.layers == g.layers("coarse")
    assert (out / "traversal.png").is_file() and (out / "values.png").is_file()
    assert torch.load(out / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 1


def test_resume_takes_the_result_from_the_checkpoint(tmp_path, monkeypatch):
    args = ["generator=stylegan2_random", "method.num_directions=4"]
    out, _ = run_fit_free(tmp_path, "sefa", *args)
    first = Directions.load(out / "directions.pt").directions.basis
    state = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["fit_free/sefa"]
    assert state["result"]["kind"] == "basis"

    def refuse(*_):
        raise AssertionError("solve ran again on resume")

    monkeypatch.setattr(SeFa, "solve", refuse)
    run_fit_free(tmp_path, "sefa", *args, "ckpt_path=last")
    assert torch.equal(Directions.load(out / "directions.pt").directions.basis, first)


@pytest.mark.parametrize("overrides,message", [
    (["generator=stylegan2_random", "generator.space=z"], "directions live in W"),
    (["generator=stylegan2_random", "generator.space=w", "method.layers=coarse"],
     "needs generator.space=w\\+"),
    (["generator=stylegan2_random", "generator.space=w+", "method.layers=0-40"],
     "layer"),
    (["generator=dcgan_random", "method.num_directions=99"], "at most 8"),
])
def test_sefa_bad_input_is_one_clear_error_before_work(tmp_path, overrides, message):
    with pytest.raises(Exception) as caught:  # Hydra wraps it; the CLI prints the cause alone
        run_fit_free(tmp_path, "sefa", *overrides)
    cause = caught.value.__cause__ or caught.value
    assert isinstance(cause, ValueError) and re.search(message, str(cause)), str(cause)
    assert not (tmp_path / "ff" / "checkpoints").exists()


# ---- GANSpace ------------------------------------------------------------------------------
def stream_latents(generator, batch_size, batches, seed=0):
    """The latents the latent datamodule yields for one process (its global batches)."""
    from datamodules.latent import LatentDataModule
    from datamodules.streams import SeededBatches

    data = LatentDataModule(batch_size=batch_size, seed=seed, generator=generator)
    stream = SeededBatches(data.make_batch, batch_size, seed)
    return torch.cat([stream.batch(s)["latent"] for s in range(batches)])


def assert_same_axes(a, b, atol=1e-5):
    assert torch.allclose((a * b).sum(1).abs(), torch.ones(a.shape[0]), atol=atol)


GANSPACE_W = ["generator=stylegan2_random", "generator.space=w", "data.batch_size=50",
              "method.samples=200", "method.num_directions=5"]


def test_ganspace_equals_a_full_pca_of_the_same_samples(tmp_path):
    out, metrics = run_fit_free(tmp_path, "ganspace", *GANSPACE_W)
    made = Directions.load(out / "directions.pt").directions
    g = random_generator("stylegan2", init_seed=0, space="w", style_dim=16, n_mlp=2,
                         channels=[16, 16, 16, 8])
    w = stream_latents(g, 50, 4).double()
    _, s, vh = torch.linalg.svd(w - w.mean(0), full_matrices=False)
    assert_same_axes(made.basis, vh[:5].float())
    assert torch.allclose(made.scales, (s[:5] / (200 - 1) ** 0.5).float(), rtol=1e-4)
    assert metrics["samples"] == 200
    # an edit of alpha = 1 moves one standard deviation along the component
    w0 = w[:1].float()
    assert torch.allclose(made.shift(w0, 0, 1.0) - w0, made.scales[0] * made.basis[0], atol=1e-6)


def test_ganspace_without_mapping_regresses_features_back_to_z(tmp_path):
    out, _ = run_fit_free(tmp_path, "ganspace", "generator=dcgan_random", "data.batch_size=100",
                          "method.samples=400", "method.num_directions=3",
                          "method.max_features=64")
    made = Directions.load(out / "directions.pt").directions
    g = random_generator("dcgan", init_seed=0, latent_dim=8, width=8)
    z = stream_latents(g, 100, 4).double()
    with torch.no_grad():
        feats = g.features(z.float(), 0).flatten(1).double()
    keep = torch.randperm(feats.shape[1], generator=torch.Generator().manual_seed(0))[:64].sort().values
    f = feats[:, keep]
    _, _, vh = torch.linalg.svd(f - f.mean(0), full_matrices=False)
    coords = (f - f.mean(0)) @ vh[:3].T                      # PCA coordinates
    coef = torch.linalg.lstsq(coords, z - z.mean(0)).solution  # z regressed on each coordinate
    expected = coef / coef.norm(dim=1, keepdim=True)
    assert_same_axes(made.basis, expected.float(), atol=1e-4)


def test_ganspace_killed_half_way_resumes_its_accumulation(tmp_path):
    whole, _ = run_fit_free(tmp_path, "ganspace", *GANSPACE_W, run_name="whole")
    # stopped after 2 of 4 batches: nothing exported, the sums are in the checkpoint
    half, _ = run_fit_free(tmp_path, "ganspace", *GANSPACE_W, "trainer.max_steps=2", run_name="half")
    assert not (half / "directions.pt").exists()
    state = torch.load(half / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["fit_free/ganspace"]
    assert state["seen"] == 100 and state["result"] is None and float(state["stats"]["count"]) == 100
    run_fit_free(tmp_path, "ganspace", *GANSPACE_W, "ckpt_path=last", run_name="half")
    a = Directions.load(whole / "directions.pt").directions
    b = Directions.load(half / "directions.pt").directions
    assert torch.allclose(a.basis, b.basis, atol=1e-6) and torch.allclose(a.scales, b.scales)


def test_exactly_the_asked_sample_count_is_accumulated(tmp_path):
    _, metrics = run_fit_free(tmp_path, "ganspace", *GANSPACE_W, "method.samples=130")
    assert metrics["samples"] == 130  # 3 batches of 50, the last cut at 30


def test_ganspace_bad_input(tmp_path):
    with pytest.raises(Exception) as caught:
        run_fit_free(tmp_path, "ganspace", "generator=stylegan2_random", "generator.space=z")
    assert "generator.space=w" in str(caught.value.__cause__ or caught.value)


# ---- InterFaceGAN --------------------------------------------------------------------------
def test_the_svm_separates_a_planted_linear_attribute():
    from lightning_modules.fit_free.interfacegan import linear_svm

    gen = torch.Generator().manual_seed(0)
    normal = torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0)
    x = torch.randn(600, 16, generator=gen)
    score = x @ normal
    keep = score.abs() > 0.5                      # a margin, as the extremes of InterFaceGAN have
    w, b = linear_svm(x[keep], (score[keep] > 0).float())
    assert torch.nn.functional.cosine_similarity(w.float(), normal, dim=0) > 0.95
    assert ((x[keep].double() @ w + b > 0) == (score[keep] > 0)).all()


def test_conditioning_removes_the_projection_and_renormalises():
    from lightning_modules.fit_free.interfacegan import condition

    gen = torch.Generator().manual_seed(1)
    v, others = torch.randn(8, generator=gen), torch.randn(2, 8, generator=gen)
    c = condition(v / v.norm(), others)
    assert torch.allclose(others @ c, torch.zeros(2), atol=1e-5) and abs(float(c.norm()) - 1) < 1e-5
    with pytest.raises(ValueError, match="vanished"):
        condition(others[0] / others[0].norm(), others)


IFG_W = ["generator=stylegan2_random", "generator.space=w", "data.batch_size=100",
         "method.samples=400", "method.ratio=0.05",
         "method.factors=[scale,x]"]


def test_interfacegan_reads_any_factor_class_probabilities_and_angle_components(tmp_path):
    out, metrics = run_fit_free(tmp_path, "interfacegan", *IFG_W,
                                "method.factors=['shape=1','hue.cos']")
    assert Directions.load(out / "directions.pt").num_directions == 2
    assert {"shape=1/val_accuracy", "hue.cos/val_accuracy"} <= set(metrics)


def test_interfacegan_runs_through_train_py_with_conditions(tmp_path):
    out, metrics = run_fit_free(tmp_path, "interfacegan", *IFG_W,
                                "method.conditions={scale:[x,y]}")
    made = Directions.load(out / "directions.pt")
    assert made.num_directions == 2 and made.meta["method"] == "interfacegan"
    for name in ("scale", "x", "y"):  # y fitted for the condition only
        assert 0 <= metrics[f"{name}/val_accuracy"] <= 1 and f"{name}/remaining_accuracy" in metrics
    # scale's direction is orthogonal to x's (and to y's, fitted but not exported)
    basis = made.directions.basis
    assert abs(float(basis[0] @ basis[1])) < 1e-5
    state = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["fit_free/interfacegan"]
    assert state["stats"]["top_scores"].shape == (3, 20)  # 5% of 400 a side, for scale, x and y
    assert (state["stats"]["top_scores"].min(1).values >= state["stats"]["bottom_scores"].max(1).values).all()


@pytest.mark.parametrize("overrides,message", [
    (["method.factors=[colour]"], "has no factor 'colour'"),
    (["method.factors=[shape]"], "is categorical, read it as one of ['shape=0'"),
    (["method.samples=100"], "too few samples for the split"),
    (["generator.regressor=null"], "names none in its config: pass method.regressor"),
    (["method.conditions={hue:[x]}"], "not among factors"),
])
def test_interfacegan_bad_input(tmp_path, overrides, message):
    with pytest.raises(Exception) as caught:
        run_fit_free(tmp_path, "interfacegan", *IFG_W, *overrides)
    cause = caught.value.__cause__ or caught.value
    assert message in str(cause), str(cause)


# ---- LowRankGAN ----------------------------------------------------------------------------
class PlantedLocal(torch.nn.Module):
    """A generator whose central box depends on z[0:2] and the whole image on z[2:4];
    z[4:] does nothing."""

    def __init__(self, resolution=16):
        from generators.base import Generator

        super().__init__()
        self.base = Generator()
        self.resolution, self.latent_dim, self.space = resolution, 6, "z"
        r = torch.arange(resolution) / resolution
        self.register_buffer("box", ((r >= 0.25) & (r < 0.75))[:, None] & ((r >= 0.25) & (r < 0.75))[None])
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("local", torch.randn(2, resolution, resolution, generator=gen))
        self.register_buffer("glob", torch.randn(2, resolution, resolution, generator=gen))

    @property
    def device(self):
        return self.box.device

    def forward(self, z, y=None):
        local = torch.tanh(torch.einsum("nk,khw->nhw", z[:, :2], self.local)) * self.box
        glob = torch.tanh(torch.einsum("nk,khw->nhw", z[:, 2:4], self.glob))
        return (local + glob)[:, None].expand(-1, 3, -1, -1)


def test_the_batched_jacobian_equals_autograds():
    from lightning_modules.fit_free.lowrankgan import image_jacobian

    g = random_generator("dcgan", init_seed=0, latent_dim=8, width=8)
    z = torch.randn(8, generator=torch.Generator().manual_seed(0))

    def image(v):
        return torch.nn.functional.interpolate(g(v[None]).mean(1, keepdim=True), size=(16, 16),
                                               mode="bilinear", antialias=True).flatten()

    reference = torch.autograd.functional.jacobian(image, z)   # one backward pass an output
    for mode in ("forward", "reverse"):
        batched = image_jacobian(g, z, 16, mode=mode)
        assert batched.shape == (256, 8) and torch.allclose(batched, reference, atol=1e-5)
        assert torch.allclose(image_jacobian(g, z, 16, chunk_size=3, mode=mode), batched, atol=1e-6)


def test_robust_pca_recovers_a_planted_low_rank_matrix():
    from lightning_modules.fit_free.lowrankgan import numerical_rank, robust_pca

    gen = torch.Generator().manual_seed(0)
    low = (torch.randn(30, 2, generator=gen, dtype=torch.float64)
           @ torch.randn(2, 30, generator=gen, dtype=torch.float64))
    sparse = torch.zeros(30, 30, dtype=torch.float64)
    sparse.view(-1)[torch.randperm(900, generator=gen)[:20]] = 5.0
    got_low, got_sparse = robust_pca(low + sparse)
    assert numerical_rank(got_low) == 2
    assert torch.linalg.matrix_norm(got_low - low) / torch.linalg.matrix_norm(low) < 1e-3


def test_lowrankgan_edits_of_a_planted_local_generator_stay_in_their_region():
    from lightning_modules.fit_free.lowrankgan import LowRankGAN

    g = PlantedLocal()
    # this M_b is a 2 x 2 block, which robust PCA rightly calls sparse: the background's rank
    # is given here; the foreground's comes from robust PCA
    method = LowRankGAN(region=[0.25, 0.75, 0.25, 0.75], num_directions=2, samples=3,
                        jacobian_size=16, rank_background=2)
    method.mask = method.make_mask(16)
    stats = method.init_stats(g)
    method.accumulate(g, {"latent": torch.randn(3, 6, generator=torch.Generator().manual_seed(1))}, stats)
    directions, metrics = method.solve(g, stats)
    assert metrics["rank_background"] == 2 and directions.num_directions >= 1
    # the directions lie in span(z0, z1): the box's own latents
    assert torch.allclose(directions.basis[:, :2].norm(dim=1), torch.ones(directions.num_directions), atol=1e-4)
    z = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    change = (g(directions.shift(z, 0, 2.0)) - g(z)).abs()[:, 0]
    assert change[:, ~g.box].max() < 1e-5 and change[:, g.box].mean() > 1e-2


def test_lowrankgan_runs_through_train_py(tmp_path):
    out, metrics = run_fit_free(tmp_path, "lowrankgan", "generator=dcgan_random",
                                "method.samples=2", "method.jacobian_size=16",
                                "method.num_directions=2", "data.val_batches=1")
    made = Directions.load(out / "directions.pt")
    assert made.meta["method"] == "lowrankgan" and 1 <= made.num_directions <= 2
    assert metrics["local_edit_ratio"] > 0 and metrics["rank_background"] >= 1


@pytest.mark.parametrize("overrides,message", [
    (["method.region=[0.5,0.25,0,1]"], "top < bottom"),
    (["method.region=[0,1,0,1]"], "covers every pixel"),
    (["method.region=MASK"], "must be 32 x 32"),
    (["generator=stylegan2_random", "generator.space=w+"], "generator.space=z or w"),
])
def test_lowrankgan_bad_input(tmp_path, overrides, message):
    import torchvision

    mask = tmp_path / "mask.png"
    torchvision.io.write_png(torch.zeros(1, 20, 20, dtype=torch.uint8), str(mask))
    overrides = [o.replace("MASK", str(mask)) for o in overrides]
    with pytest.raises(Exception) as caught:
        run_fit_free(tmp_path, "lowrankgan", "generator=dcgan_random", *overrides)
    cause = caught.value.__cause__ or caught.value
    assert message in str(cause), str(cause)


# ---- every fit-free method: two DDP processes give the one-process result -------------------
LRG_TINY = ["generator=dcgan_random", "method.samples=2", "data.val_batches=1",
            "method.jacobian_size=16", "method.num_directions=2"]


@pytest.mark.parametrize("method,overrides", [
    ("sefa", ["generator=stylegan2_random", "generator.space=w", "method.num_directions=4"]),
    ("ganspace", GANSPACE_W),
    ("interfacegan", IFG_W),
    ("lowrankgan", LRG_TINY),
    ("stylespace", ["generator=stylegan2_random", "generator.space=s", "method.samples=200",
                    "data.batch_size=50", "method.positives=20", "method.factors=[x,scale]"]),
    ("styleclip_global", ["generator=stylegan2_random", "method.images=4", "data.batch_size=2",
                          "method.std_samples=100", "method.cache_dir=null", "clip.path=CLIP"]),
])
@pytest.mark.slow
def test_two_ddp_processes_give_the_one_process_result(tmp_path, method, overrides):
    from conftest import run_script, tiny_world_clip

    overrides = [o.replace("CLIP", str(tiny_world_clip(tmp_path))) for o in overrides]
    one, _ = run_fit_free(tmp_path, method, *overrides, run_name="one")
    args = [f"method={method}", "trainer=ddp_cpu", "run_name=two", *FIT_FREE_TINY, *overrides]
    result = run_script(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a = Directions.load(one / "directions.pt").directions
    b = Directions.load(tmp_path / "outputs/two/directions.pt").directions
    # the same samples in another summation order (interfacegan: the same extremes, the same SVM)
    assert torch.allclose(a.basis, b.basis, atol=1e-5) and torch.allclose(a.scales, b.scales, atol=1e-5)
