"""GLO: "Optimizing the Latent Space of Generative Networks" (Bojanowski, Joulin, Lopez-Paz and
Szlam, ICML 2018). The one method of this project that trains a generator: no discriminator,
one learnable code z_i per training image x_i, and the generator G trained jointly with them:

    min_{G, z_1..z_N}  sum_i  w_l2 * L2(G(z_i), x_i) + w_lap1 * Lap1(G(z_i), x_i),   z_i in S^(d-1)

L2 and Lap1 (the Laplacian-pyramid L1, every level weighted 2^(2j) so that each counts per
pixel alike) are ``metrics.distances.l2`` / ``lap1``. The codes start from PCA of the images
(their projections on the top d principal axes, normalised) or at random, and are projected
back onto the unit sphere (``project: sphere``) or into the unit ball (``ball``) after every
step. At the end of fit the generator is exported as ``generator.pt`` with a full-covariance
Gaussian fitted to the learned codes (``generators/glo.py``: the editing latent is n ~ N(0, I)
and z = mean + L n inside the generator, so every direction method works on it unchanged).

Optimisers (the paper used SGD): Adam for the generator, and for the codes a row-wise ("lazy")
Adam (``RowAdam``): a code moves only when its image is in a batch, with moments and a bias
correction that count its own visits (dense Adam would keep moving every code on stale
momentum; SGD's step would depend on the loss scale and the Lap1 levels, Adam's does not). A
code's gradient is that of its own image's loss, whatever the batch size or process count.

Defaults (configs/training/glo.yaml): Adam 1e-3, betas (0.9, 0.999) for the generator (a
regression, not a GAN game: the usual Adam setting); RowAdam 1e-2 for the codes, about 0.01 per
coordinate and visit on the unit sphere (each code is visited once an epoch, 64 batches for
4,096 images); w_l2 = w_lap1 = 1 (L2 is what PSNR reads, Lap1 keeps edges sharp). On 4,096
renders of the shapes world at 32 px, d = 16: 25 dB reconstruction PSNR after 1,000 batches of
64, 29.8 dB after 2,000, about 5 batches/s on one CPU thread.

DDP: the generator's gradients are averaged by DDP as usual; the codes are not a DDP parameter.
Every process gathers the batch's indices and per-image code gradients of all processes and
applies the same update to the same rows, so the codes stay identical everywhere (checked at
the end of fit) at the cost of B x d numbers per process and step.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from common.errors import UserError
from common.images import log_image, save_grid
from common.preemption import stopped_by_signal
from common.seeds import PRETRAIN_SAMPLE_SEED
from common.training import batches_done
from generators.base import Generator
from generators.dcgan import DCGANGenerator
from generators.glo import GLOGenerator, fit_gaussian
from generators.pretrain import save_weights, submodule_state
from metrics.distances import l2, lap1
from metrics.distances import psnr_of_mse as psnr

INITS = ("pca", "random")
PROJECTIONS = ("sphere", "ball")
_CHUNK = 256  # images a forward pass at evaluation and in PCA


def project_codes(codes: torch.Tensor, project: str = "sphere") -> torch.Tensor:
    """Rows onto the unit sphere (``sphere``) or into the unit ball (``ball``: longer rows only)."""
    norms = codes.norm(dim=1, keepdim=True)
    return codes / (norms.clamp_min(1e-12) if project == "sphere" else norms.clamp_min(1.0))


def pca_codes(images: torch.Tensor, dim: int) -> torch.Tensor:
    """Projections (``N x dim``, float32) of the flattened, centred images on their top ``dim``
    principal axes, each axis signed so that its largest loading is positive (eigenvector
    signs are arbitrary; this makes them reproducible).

    Exact, in float64, from the smaller of the Gram matrix (N x N) and the covariance
    (D x D, accumulated over chunks), so memory stays bounded by the smaller of N^2 and D^2.
    ``images`` may be 8-bit pixels: an affine change of pixel scale changes the scores by one
    factor, which normalisation removes.
    """
    x = images.flatten(1)
    n, size = x.shape
    if not 0 < dim < min(n, size):
        raise UserError(f"init=pca: {dim} principal components of {n} images of {size} values "
                         "needs more images than latent_dim; use more images or init=random")
    chunks = range(0, n, _CHUNK)
    mean = sum(x[i:i + _CHUNK].double().sum(0) for i in chunks) / n
    if n <= size:
        centred = x.double() - mean
        values, vectors = torch.linalg.eigh(centred @ centred.T)
        axes = centred.T @ vectors[:, -dim:].flip(1) / values[-dim:].flip(0).clamp_min(1e-12).sqrt()
    else:
        cov = torch.zeros(size, size, dtype=torch.float64, device=x.device)
        for i in chunks:
            centred = x[i:i + _CHUNK].double() - mean
            cov += centred.T @ centred
        axes = torch.linalg.eigh(cov)[1][:, -dim:].flip(1)
    axes = axes * axes.gather(0, axes.abs().argmax(0, keepdim=True)).sign()
    return torch.cat([(x[i:i + _CHUNK].double() - mean) @ axes for i in chunks]).float()


def initial_codes(images: torch.Tensor, dim: int, init: str = "pca", project: str = "sphere",
                  seed: int = 0) -> torch.Tensor:
    """The codes GLO starts from (``N x dim``): PCA projections of the images (``pca``) or
    standard-normal draws seeded by ``seed`` (``random``), then each on the unit sphere
    (``sphere``), or all divided by the longest one (``ball``: inside the ball, relative
    lengths kept)."""
    if init not in INITS:
        raise UserError(f"unknown GLO init {init!r}: use one of {list(INITS)}")
    if project not in PROJECTIONS:
        raise UserError(f"unknown GLO projection {project!r}: use one of {list(PROJECTIONS)}")
    if init == "pca":
        codes = pca_codes(images, dim)
    else:
        codes = torch.randn(len(images), dim, generator=torch.Generator().manual_seed(seed))
    if project == "sphere":
        return project_codes(codes, "sphere")
    return codes / codes.norm(dim=1).max().clamp_min(1e-12)


class RowAdam(torch.optim.Optimizer):
    """Adam on the rows of a table that have a (sparse) gradient, each row with its own moments
    and its own step count for the bias correction: a row whose image is not in the batch does
    not move, and a row's first step is ``lr`` long whatever the global step.

    The gradient is a sparse COO tensor of rows (duplicates are summed). The state
    (``exp_avg``, ``exp_avg_sq``, ``visits``) is a tensor the size of the table, saved with the
    optimizer like any other.
    """

    def __init__(self, params, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr < 0:
            raise UserError(f"RowAdam: learning rate must be >= 0, got {lr}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise UserError("RowAdam takes sparse gradients (rows of a table)")
                grad = p.grad.coalesce()
                rows, g = grad.indices()[0], grad.values()
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["visits"] = torch.zeros(len(p), dtype=p.dtype, device=p.device)
                m = state["exp_avg"][rows].mul_(beta1).add_(g, alpha=1 - beta1)
                v = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                t = state["visits"][rows] + 1
                state["exp_avg"][rows], state["exp_avg_sq"][rows], state["visits"][rows] = m, v, t
                m_hat = m / (1 - beta1 ** t)[:, None]
                v_hat = v / (1 - beta2 ** t)[:, None]
                p[rows] -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])
        return loss


class GLO(pl.LightningModule):
    """Trains a DCGAN generator and one code per training image (see the module docstring) on
    batches ``{"images", "index"}`` of ``datamodules.image_set.ImageSetDataModule``.

    Args:
        generator: the (trainable) DCGAN to train, in its Z space (``random_generator(frozen=False)``).
        init: ``pca`` or ``random`` initial codes (``initial_codes``).
        project: ``sphere`` or ``ball``: where the codes are kept after every step.
        w_l2, w_lap1: weights of the L2 and Lap1 terms of the loss.
        lap1_levels: levels of the Laplacian pyramid of Lap1.
        lr_g, betas: the generator's Adam.
        lr_codes, code_betas: the codes' ``RowAdam``.
        norm_batch: compute the generator's BatchNorm statistics over groups of this many
            images of a batch (null: the whole batch). W DDP processes normalise over each
            process's batch; ``norm_batch=<that batch>`` makes one process compute exactly what
            they did.
        init_seed: seed of ``init: random``.
        sample_every_n_steps: how often (batches) to save and log the reconstruction and sample
            grids and the reconstruction PSNR (0: only at the end).
        num_samples: images in the samples grid (fixed standard-normal draws).
        num_reconstructions: training images (the first ones) in the reconstruction grid.
        psnr_images: training images (the first ones) the reconstruction PSNR is measured on
            (null: all of them).
    """

    optimizer_steps_per_batch = 2  # the generator's step, then the codes': what global_step counts

    # Options a resume may change (train.py compares the others with the checkpoint's): the
    # configured learning rates win over the stored ones (on_train_start).
    resume_free = ("lr_g", "lr_codes")

    def __init__(self, generator: Generator, init: str = "pca", project: str = "sphere",
                 w_l2: float = 1.0, w_lap1: float = 1.0, lap1_levels: int = 4,
                 lr_g: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 lr_codes: float = 1e-2, code_betas: tuple[float, float] = (0.9, 0.999),
                 norm_batch: int | None = None, init_seed: int = 0,
                 sample_every_n_steps: int = 1000, num_samples: int = 64,
                 num_reconstructions: int = 32, psnr_images: int | None = None) -> None:
        super().__init__()
        if init not in INITS:
            raise UserError(f"unknown GLO init {init!r}: use one of {list(INITS)}")
        if project not in PROJECTIONS:
            raise UserError(f"unknown GLO projection {project!r}: use one of {list(PROJECTIONS)}")
        if w_l2 < 0 or w_lap1 < 0 or w_l2 + w_lap1 == 0:
            raise UserError(f"GLO loss weights must be >= 0 and not both 0, got w_l2={w_l2}, "
                             f"w_lap1={w_lap1}")
        if not isinstance(generator, DCGANGenerator) or generator.space != "z":
            raise UserError("GLO trains the built-in DCGAN in its Z space: build it with "
                             "generators.random_generator(architecture='dcgan', frozen=False)")
        if not any(p.requires_grad for p in generator.parameters()):
            raise UserError("GLO trains its generator, but this one is frozen: build it with "
                             "frozen=False in method.generator")
        if norm_batch is not None and norm_batch < 2:
            raise UserError(f"norm_batch must be null or at least 2 images, got {norm_batch}")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator"])
        self.generator = generator
        self.register_parameter("codes", None)  # N x d, made in setup() from the datamodule
        self.register_buffer("fixed_noise", torch.randn(
            num_samples, generator.z_dim, generator=torch.Generator().manual_seed(PRETRAIN_SAMPLE_SEED)))
        self.final_metrics: dict[str, float] = {}

    # ---- set-up --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.codes is not None:
            return
        data = self.trainer.datamodule
        if not hasattr(data, "pixels"):
            raise UserError("GLO learns one code per training image: it needs a fixed, indexed "
                             "training set (datamodules.image_set.ImageSetDataModule, data=image_set)")
        if data.pixels.shape[-1] != self.generator.resolution:
            raise UserError(f"the images are {data.pixels.shape[-1]} px but the generator draws "
                             f"{self.generator.resolution} px: build the generator with resolution "
                             "${data.resolution} (as configs/training/glo.yaml does)")
        hp = self.hparams
        # Rebuilt on resume too (the shape must exist), then replaced by the checkpoint's codes.
        codes = initial_codes(data.pixels, self.generator.z_dim, hp.init, hp.project, hp.init_seed)
        # Not a gradient parameter: DDP leaves it alone, RowAdam moves it (training_step).
        self.codes = nn.Parameter(codes, requires_grad=False)

    def configure_optimizers(self):
        hp = self.hparams
        return (torch.optim.Adam(self.generator.parameters(), hp.lr_g, betas=tuple(hp.betas)),
                RowAdam([self.codes], hp.lr_codes, betas=tuple(hp.code_betas)))

    def on_train_start(self) -> None:
        # The configured learning rates win over those in a resumed checkpoint's optimizer
        # states (moments and step counts still resume), so a schedule can change them.
        for opt, lr in zip(self.optimizers(), (self.hparams.lr_g, self.hparams.lr_codes)):
            for group in opt.optimizer.param_groups:
                group["lr"] = lr

    # ---- training ------------------------------------------------------------------------
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images of codes z themselves (the network, without the export's Gaussian)."""
        size = self.hparams.norm_batch
        if self.generator.training and size and len(codes) > size:
            return torch.cat([DCGANGenerator.forward(self.generator, c) for c in codes.split(size)])
        return DCGANGenerator.forward(self.generator, codes)

    def losses(self, recon: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image ``loss``, ``l2`` and ``lap1`` (lap1 only when weighted)."""
        hp = self.hparams
        out = {"l2": l2(recon, images)}
        loss = hp.w_l2 * out["l2"]
        if hp.w_lap1:
            out["lap1"] = lap1(recon, images, hp.lap1_levels)
            loss = loss + hp.w_lap1 * out["lap1"]
        out["loss"] = loss
        return out

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_codes = self.optimizers()
        images, index = batch["images"], batch["index"]
        codes = self.codes[index].detach().requires_grad_(True)
        parts = self.losses(self.decode(codes), images)
        loss = parts["loss"].mean()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"GLO loss is not finite at batch {batches_done(self.trainer)}; "
                                     "the last good checkpoint is kept: lower the learning rates "
                                     "and resume")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        # The mean over the batch scaled each code's gradient by 1/B: undo it, so a code moves
        # by its own image's loss whatever the batch size.
        self.step_codes(opt_codes, index, codes.grad * len(index))
        logged = {f"train/{k}": v.mean() for k, v in parts.items()}
        logged["train/psnr"] = psnr(parts["l2"].detach()).mean()
        self.log_dict(logged, prog_bar=True, batch_size=len(index))

    @torch.no_grad()
    def step_codes(self, optimizer, index: torch.Tensor, grad: torch.Tensor) -> None:
        """One RowAdam step on the rows of every process's batch, then the projection."""
        if self.trainer.world_size > 1:
            index = self.all_gather(index).flatten(0, 1)
            grad = self.all_gather(grad).flatten(0, 1)
        self.codes.grad = torch.sparse_coo_tensor(index[None], grad, tuple(self.codes.shape),
                                                check_invariants=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rows = index.unique()
        self.codes[rows] = project_codes(self.codes[rows], self.hparams.project)

    # ---- grids, quality, export ----------------------------------------------------------
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every, done = self.hparams.sample_every_n_steps, batches_done(self.trainer)
        if every and done % every == 0 and self.trainer.global_rank == 0:
            self.log_quality(self.reconstruction_quality())
            self.save_grids(f"step_{done:06d}")

    def log_quality(self, quality: dict[str, float]) -> None:
        # Straight to the loggers, at the batch count (the step of Lightning's own scalars):
        # self.log would repeat these values at every later logging step.
        for logger in self.loggers:
            logger.log_metrics({f"recon/{k}": v for k, v in quality.items()},
                               step=batches_done(self.trainer))

    @torch.no_grad()
    def reconstruction_quality(self) -> dict[str, float]:
        """PSNR (mean over images, dB), MSE and Lap1 of G(z_i) against x_i on the first
        ``psnr_images`` training images, with the generator in eval mode: what the exported
        generator draws."""
        data = self.trainer.datamodule
        n = min(self.hparams.psnr_images or data.num_images, data.num_images)
        was_training = self.generator.training
        self.generator.eval()
        try:
            totals = {"psnr": 0.0, "mse": 0.0, "lap1": 0.0}
            for i in range(0, n, _CHUNK):
                rows = torch.arange(i, min(i + _CHUNK, n))
                images = data.images(rows).to(self.device)
                recon = self.decode(self.codes[rows.to(self.device)])
                mse = l2(recon, images)
                totals["psnr"] += float(psnr(mse).sum())
                totals["mse"] += float(mse.sum())
                totals["lap1"] += float(lap1(recon, images, self.hparams.lap1_levels).sum())
        finally:
            self.generator.train(was_training)
        return {k: v / n for k, v in totals.items()}

    @torch.no_grad()
    def save_grids(self, tag: str) -> None:
        """``reconstructions/<tag>.png`` (rows of training images, each above its
        reconstruction) and ``samples/<tag>.png`` (fixed draws from the codes' Gaussian)."""
        data, run_dir = self.trainer.datamodule, Path(self.trainer.default_root_dir)
        was_training = self.generator.training
        self.generator.eval()
        try:
            rows = torch.arange(min(self.hparams.num_reconstructions, data.num_images))
            real = data.images(rows).to(self.device)
            recon = self.decode(self.codes[rows.to(self.device)])
            mean, scale = fit_gaussian(self.codes)
            samples = self.decode(mean + self.fixed_noise @ scale.T)
        finally:
            self.generator.train(was_training)
        width = 8
        pairs = torch.cat([torch.cat([a, b]) for a, b in zip(real.split(width), recon.split(width))])
        step = batches_done(self.trainer)
        for key, images, nrow in (("reconstructions", pairs, width),
                                  ("samples", samples, int(math.sqrt(len(samples))))):
            path = save_grid(images, run_dir / key / f"{tag}.png", nrow=nrow)
            log_image(self.loggers, key, path, step=step, caption=tag)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        data = self.trainer.datamodule
        checkpoint["glo_data"] = {"num_images": data.num_images, "sha256": data.fingerprint()}
        # What export_checkpoint needs to rebuild the generator from a checkpoint alone.
        checkpoint["generator_config"] = self.generator.config()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        data, saved = self.trainer.datamodule, checkpoint.get("glo_data", {})
        if saved.get("sha256") != data.fingerprint():
            raise UserError(
                f"this checkpoint's GLO codes were learned for another training set "
                f"({saved.get('num_images')} images, sha256 {str(saved.get('sha256'))[:12]}...) than "
                f"the one configured ({data.num_images} images, sha256 {data.fingerprint()[:12]}...): "
                "resume with the data settings of the original run (data.*), or start a new run")

    def on_train_end(self) -> None:
        # Here rather than in on_fit_end: the module is still on its device (the strategy's
        # teardown moves it to the CPU before on_fit_end), and every process is still there.
        if stopped_by_signal(self.trainer):  # not finished: resumed later, exported then
            return
        self._check_codes_agree()
        if self.trainer.global_rank != 0:
            return
        quality = self.reconstruction_quality()
        self.final_metrics = {f"recon_{k}": v for k, v in quality.items()}
        self.log_quality(quality)
        self.save_grids("final")
        self.export(Path(self.trainer.default_root_dir) / "generator.pt",
                    {"recon_psnr": quality["psnr"]})

    def _check_codes_agree(self) -> None:
        # Every process applied the same updates; a difference would mean a broken exchange.
        if self.trainer.world_size == 1:
            return
        sums = self.all_gather(self.codes.double().sum(0))
        if not torch.allclose(sums, sums[:1].expand_as(sums), rtol=1e-6, atol=1e-6 * len(self.codes)):
            raise RuntimeError("the GLO codes differ between processes at the end of fit; "
                               f"column sums per process: {sums.tolist()}")

    def export(self, path: str | Path, info: dict | None = None) -> Path:
        """Write the trained generator with its codes' Gaussian (``generators/glo.py``) in the
        shipped-weights format, without a discriminator."""
        data = self.trainer.datamodule
        info = dict(info or {}, method="glo", batches=batches_done(self.trainer),
                    num_images=data.num_images, data_sha256=data.fingerprint())
        return save_glo_generator(path, self.generator.config(), self.generator.state_dict(),
                                  self.codes.detach(), info)


def save_glo_generator(path: str | Path, config: dict, state: dict, codes: torch.Tensor,
                       info: dict) -> Path:
    """A ``generator.pt`` (architecture ``glo``) of trained DCGAN weights and learned codes."""
    with torch.random.fork_rng():  # building the network draws initial weights: not the run's
        generator = GLOGenerator(**config)
    result = generator.load_state_dict({k: v.cpu() for k, v in state.items()}, strict=False)
    wrong = [k for k in result.missing_keys if not k.startswith("code_")] + result.unexpected_keys
    if wrong:
        raise UserError(f"the trained weights do not fit a GLO generator: keys {wrong}")
    generator.set_gaussian(codes.cpu())
    return save_weights(path, GLOGenerator.adapter, generator.config(), None,
                        generator.state_dict(), None, info)


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path) -> Path:
    """Write the ``generator.pt`` of a GLO checkpoint (e.g. a run stopped early).

    ``python -m lightning_modules.glo outputs/glo_shapes/checkpoints/last.ckpt out.pt``
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "glo_data" not in ckpt:
        raise UserError(f"{ckpt_path} is not a checkpoint of GLO (it records no glo_data)")
    state = ckpt["state_dict"]
    generator = submodule_state(state, "generator")
    info = {"method": "glo", "batches": ckpt["global_step"] // GLO.optimizer_steps_per_batch,
            "num_images": ckpt["glo_data"]["num_images"],
            "data_sha256": ckpt["glo_data"]["sha256"], "from_checkpoint": str(ckpt_path)}
    return save_glo_generator(out_path, ckpt["generator_config"], generator, state["codes"], info)


if __name__ == "__main__":
    import sys

    print(export_checkpoint(sys.argv[1], sys.argv[2]))
