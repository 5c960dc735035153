"""GLO (lightning_modules/glo.py) through train.py on a tiny DCGAN, its training set
(datamodules/image_set.py), its exported generator (generators/glo.py), and Lap1."""
import pytest
import torch
from conftest import TINY, compose_cfg, run_script
from torchvision.utils import save_image

from datamodules.image_set import EpochBatches, ImageSetDataModule, from_pixels, to_pixels
from datamodules.world import ShapesWorld
from directions import Directions
from generators import load_generator
from generators.dcgan import DCGANGenerator
from generators.glo import GLOGenerator, fit_gaussian
from lightning_modules.glo import RowAdam, export_checkpoint, initial_codes, pca_codes
from metrics.distances import lap1, laplacian_pyramid
from train import train

N, RES, BATCH, DIM = 32, 16, 8, 4
TINY_GLO = ["logger=none", f"data.num_images={N}",
            f"data.resolution={RES}", f"data.batch_size={BATCH}", "trainer.max_steps=4",
            "method.generator.width=8", f"method.generator.latent_dim={DIM}",
            "method.sample_every_n_steps=2", "method.num_samples=4",
            "method.num_reconstructions=8", "callbacks.checkpoint.every_n_train_steps=2",
            "trainer.enable_progress_bar=false"]


def run_glo(tmp_path, *overrides, run_name="glo", experiment="glo_shapes"):
    cfg = compose_cfg([f"experiment={experiment}", f"run_name={run_name}", *TINY_GLO, *overrides], tmp_path)
    return tmp_path / run_name, train(cfg)


def checkpoint(out):
    return torch.load(out / "checkpoints/last.ckpt", weights_only=True)


def training_set(world_seed=0):
    return ImageSetDataModule(num_images=N, resolution=RES, batch_size=BATCH, world_seed=world_seed)


# ---- a run, end to end -----------------------------------------------------------------------
def test_glo_trains_and_exports_a_frozen_generator(tmp_path):
    out, metrics = run_glo(tmp_path)
    ckpt = checkpoint(out)
    assert ckpt["global_step"] == 8  # 4 batches, each a generator and a code step
    assert {"recon_psnr", "recon_mse", "recon_lap1", "train/psnr"} <= set(metrics)
    assert 0 < metrics["recon_psnr"] < 60
    for grid in ("reconstructions", "samples"):
        assert (out / grid / "step_000002.png").is_file() and (out / grid / "final.png").is_file()

    g = load_generator(out / "generator.pt")
    assert isinstance(g, GLOGenerator) and g.adapter == "glo" and g.discriminator is None
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    assert g.latent_dim == DIM and g.resolution == RES and g.identity()["adapter"] == "glo"
    # sample() draws n ~ N(0, I); the network reads z = mean + L n, the codes' Gaussian
    mean, scale = fit_gaussian(ckpt["state_dict"]["codes"])
    assert torch.allclose(g.code_mean, mean, atol=1e-6) and torch.allclose(g.code_scale, scale, atol=1e-6)
    assert torch.allclose(scale @ scale.T, torch.cov(ckpt["state_dict"]["codes"].T), atol=1e-5)
    n = g.sample(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(g(n), DCGANGenerator.forward(g, mean + n @ scale.T), atol=1e-6)
        assert g(n).shape == (5, 3, RES, RES)
        # the hooks read n as well: SeFa's weight is the first layer's composed with L
        assert torch.allclose(g.projection_weight(), g.project.weight @ scale, atol=1e-6)
        assert g.features(n, 1).shape[0] == 5
    # the checkpoint exports to the same generator as the end of fit did
    again = load_generator(export_checkpoint(out / "checkpoints/last.ckpt", tmp_path / "again.pt"))
    with torch.no_grad():
        assert torch.allclose(again(n), g(n), atol=1e-6)


def test_exported_generator_plugs_into_voynov(tmp_path):
    out, _ = run_glo(tmp_path)
    voynov = [t for t in TINY if not t.startswith("generator=")]
    train(compose_cfg(["method=voynov", "run_name=v", *voynov, f"generator.path={out / 'generator.pt'}",
                       "generator.regressor=null"], tmp_path))
    g = load_generator(out / "generator.pt")
    directions = Directions.load(tmp_path / "v/directions.pt", generator=g)  # refuses another generator
    assert directions.meta["generator"]["adapter"] == "glo"
    with torch.no_grad():
        assert g(directions.shift(g.sample(2), index=0, alpha=2.0)).shape == (2, 3, RES, RES)


# ---- the codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("project", ["sphere", "ball"])
def test_codes_stay_on_the_sphere_or_in_the_ball(tmp_path, project):
    out, _ = run_glo(tmp_path, f"method.project={project}", "method.lr_codes=0.2")
    codes = checkpoint(out)["state_dict"]["codes"]
    start = initial_codes(training_set().pixels, DIM, "pca", project)
    moved = (codes - start).norm(dim=1) > 1e-3
    assert moved.all()  # every image was in a batch (4 batches of 8 from 32) and its code stepped
    norms = codes.norm(dim=1)
    if project == "sphere":
        assert torch.allclose(norms, torch.ones(N), atol=1e-5)
    else:
        assert (norms <= 1 + 1e-6).all()


def test_pca_init_is_the_projection_on_the_top_principal_axes():
    rng = torch.Generator().manual_seed(0)
    for n, size in ((20, 48), (60, 12)):  # the Gram path (N <= D) and the covariance path
        images = torch.rand(n, 3, 4, size // 12, generator=rng) * torch.linspace(1, 3, size).view(1, 3, 4, -1)
        x = images.flatten(1).double()
        centred = x - x.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        expected = (centred @ vh[:DIM].T).float()
        scores = pca_codes(images, DIM)
        signs = (scores * expected).sum(0).sign()  # eigenvector signs are a convention
        assert torch.allclose(scores, expected * signs, atol=1e-4)
        axes = vh[:DIM].T * signs.double()
        assert (axes.gather(0, axes.abs().argmax(0, keepdim=True)) > 0).all()  # the convention
        sphere = initial_codes(images, DIM, "pca", "sphere")
        assert torch.allclose(sphere, scores / scores.norm(dim=1, keepdim=True), atol=1e-6)
        ball = initial_codes(images, DIM, "pca", "ball")
        assert torch.allclose(ball, scores / scores.norm(dim=1).max(), atol=1e-6)
    # 8-bit pixels and [-1, 1] images give the same codes: only the scale differs
    pixels = training_set().pixels
    assert torch.allclose(initial_codes(pixels, DIM), initial_codes(from_pixels(pixels), DIM), atol=1e-5)
    with pytest.raises(ValueError, match="more images than latent_dim"):
        pca_codes(torch.rand(4, 3, 2, 2), 4)


def test_a_run_starts_from_the_pca_codes(tmp_path):
    out, _ = run_glo(tmp_path, "trainer.max_steps=1", "method.lr_codes=0")
    codes = checkpoint(out)["state_dict"]["codes"]
    assert torch.allclose(codes, initial_codes(training_set().pixels, DIM), atol=1e-6)
    out, _ = run_glo(tmp_path, "trainer.max_steps=1", "method.lr_codes=0",
                     "method.init=random", run_name="random")
    codes = checkpoint(out)["state_dict"]["codes"]
    assert torch.allclose(codes, initial_codes(training_set().pixels, DIM, "random", seed=0), atol=1e-6)


def test_row_adam_moves_only_the_rows_in_the_batch():
    table = torch.nn.Parameter(torch.zeros(5, 3), requires_grad=False)
    optimizer = RowAdam([table], lr=0.1)
    grad = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), grad, (5, 3), check_invariants=True)
    optimizer.step()
    # a row's first step is lr long in each coordinate (its own bias correction), others stay
    assert torch.allclose(table[[1, 3]], -0.1 * grad.sign(), atol=1e-6)
    assert (table[[0, 2, 4]] == 0).all()
    # a row in the batch twice (two processes' batches at an epoch boundary): gradients summed
    table.grad = torch.sparse_coo_tensor(torch.tensor([[0, 0]]), torch.tensor([[1.0, 0, 0], [-3.0, 0, 0]]), (5, 3),
                                         check_invariants=True)
    optimizer.step()
    assert table[0, 0] > 0 and optimizer.state[table]["visits"].tolist() == [1, 1, 0, 1, 0]


# ---- resume and DDP --------------------------------------------------------------------------
def test_resume_gives_the_uninterrupted_result(tmp_path):
    straight, _ = run_glo(tmp_path, run_name="straight")
    run_glo(tmp_path, "trainer.max_steps=2", run_name="resumed")
    resumed, _ = run_glo(tmp_path, "ckpt_path=last", run_name="resumed")
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():  # codes, generator weights and BN statistics
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"]):  # Adam and the codes' RowAdam
        for pa, pb in zip(sa["state"].values(), sb["state"].values()):
            for key in pa:
                assert torch.allclose(torch.as_tensor(pa[key]).float(), torch.as_tensor(pb[key]).float(),
                                      atol=1e-6), key
    # a checkpoint is never resumed on another training set than its codes were learned for
    with pytest.raises(ValueError, match="another training set"):
        run_glo(tmp_path, "ckpt_path=last", "trainer.max_steps=6", "data.world_seed=1", run_name="resumed")


@pytest.mark.slow
def test_two_ddp_processes_give_the_one_process_result(tmp_path):
    # One process with batches of 2 x 8 (BatchNorm over each half: what each process of 8
    # normalises over) takes exactly the union of the two processes' batches.
    one, _ = run_glo(tmp_path, f"data.batch_size={2 * BATCH}", f"method.norm_batch={BATCH}",
                     run_name="one")
    result = run_script(["experiment=glo_shapes", "run_name=two", "trainer=ddp_cpu", *TINY_GLO],
                        cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = checkpoint(one), checkpoint(tmp_path / "outputs/two")
    assert a["global_step"] == b["global_step"] == 8
    assert torch.allclose(a["state_dict"]["codes"], b["state_dict"]["codes"], atol=1e-5)
    # the weights (not BatchNorm's running statistics: DDP keeps rank 0's)
    names = [k for k, _ in GLOGenerator(DIM, RES, 8).named_parameters()]
    for name in names:
        key = f"generator.{name}"
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-5), key
    assert load_generator(tmp_path / "outputs/two/generator.pt").latent_dim == DIM


# ---- the training set ------------------------------------------------------------------------
def test_epochs_visit_every_image_once_and_processes_split_the_batches():
    dm = training_set()
    rows = EpochBatches(lambda i: {}, N, BATCH, seed=0)
    epoch = torch.cat([rows.indices(s) for s in range(N // BATCH)])
    assert sorted(epoch.tolist()) == list(range(N))
    assert not torch.equal(epoch, torch.cat([rows.indices(s) for s in range(N // BATCH, 2 * N // BATCH)]))
    # two processes' batches of 8 at step s are one process's batch of 16 at step s, in rank order
    double = EpochBatches(lambda i: {}, N, 2 * BATCH, seed=0)
    ranks = [EpochBatches(lambda i: {}, N, BATCH, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for s in range(5):
        assert torch.equal(double.indices(s), torch.cat([r.indices(s) for r in ranks]))
    # a resumed stream starts where it stopped; a batch's images are its rows of the set
    resumed = iter(EpochBatches(lambda i: {"images": dm.images(i)}, N, BATCH, seed=0, start=3))
    batch = next(resumed)
    assert torch.equal(batch["index"], rows.indices(3)) and torch.equal(batch["images"], dm.images(batch["index"]))
    assert batch["images"].shape == (BATCH, 3, RES, RES)
    # the renders, 8-bit, seeded by world_seed
    world = ShapesWorld(RES)
    expected = world.render(world.sample_factors(N, torch.Generator().manual_seed(0)))
    assert (dm.images() - expected).abs().max() <= 1 / 127.5 and torch.equal(dm.pixels, training_set().pixels)
    assert not torch.equal(dm.pixels, training_set(world_seed=1).pixels)


def test_a_folder_without_labels_is_a_training_set(tmp_path):
    pixels = training_set().pixels[:10]
    (tmp_path / "sub").mkdir()
    for i, image in enumerate(pixels):
        save_image(image.float() / 255, tmp_path / ("sub" if i % 2 else ".") / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageSetDataModule(root=str(tmp_path), num_images=None, resolution=RES, batch_size=4)
    assert dm.num_images == 10 and dm.factors is None
    by_name = {p.name: i for i, p in enumerate(dm.paths)}
    for i in range(10):
        assert torch.equal(dm.pixels[by_name[f"{i:02d}.png"]], pixels[i])  # 8-bit PNGs read back exactly
    assert ImageSetDataModule(root=str(tmp_path), num_images=3, resolution=RES, batch_size=2).num_images == 3
    assert torch.equal(to_pixels(from_pixels(pixels)), pixels)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        ImageSetDataModule(root=str(empty), resolution=RES)
    with pytest.raises(ValueError, match="fewer than a batch"):
        ImageSetDataModule(root=str(tmp_path), resolution=RES, batch_size=64)


def test_glo_folder_trains_on_a_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(training_set().pixels):
        save_image(image.float() / 255, images / f"{i:02d}.png")
    out, metrics = run_glo(tmp_path, f"data.root={images}", run_name="folder", experiment="glo_folder")
    assert (out / "generator.pt").is_file() and metrics["recon_psnr"] > 0


# ---- Lap1 ------------------------------------------------------------------------------------
def test_lap1_is_zero_for_equal_images_and_weights_its_levels_as_documented():
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=rng) * 2 - 1
    assert torch.equal(lap1(x, x.clone()), torch.zeros(2))
    eps = 0.1
    # A checkerboard is cancelled by the binomial blur: a difference in level 0 alone.
    rows = torch.arange(32)
    checker = (-1.0) ** (rows[:, None] + rows[None, :]).float()
    # A constant is kept by the blur and the upsampling: a difference in the low-pass residual alone.
    for delta, level in ((eps * checker.expand(2, 3, 32, 32), 0), (torch.full((2, 3, 32, 32), eps), 3)):
        diffs = [(a - b).abs() for a, b in zip(laplacian_pyramid(x + delta, 4), laplacian_pyramid(x, 4))]
        assert [j for j, d in enumerate(diffs) if d.max() > 1e-5] == [level]
        # sum_j 2^(2j) |L^j(x) - L^j(x')|_1 / pixels: each level weighs its pixels alike, so a
        # difference of eps everywhere in one level costs eps, whichever the level
        pixels = x[0].numel()
        documented = sum(4 ** j * d.flatten(1).sum(1) for j, d in enumerate(diffs)) / pixels
        assert torch.allclose(lap1(x + delta, x), documented, atol=1e-5)
        assert torch.allclose(lap1(x + delta, x), torch.full((2,), eps), atol=1e-5)
