"""GAN pretraining of the built-in generators on the procedural world.

One discriminator step per generator step, and an exponential moving average of the generator's
weights (the EMA generator is what gets exported and shipped: it draws cleaner samples). Two
losses:

- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018), the DCGAN's, with a spectral-norm D:
  L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))],    L_G = -E[D(G(z))]
- ``nonsaturating`` (StyleGAN2's), with lazy R1 on real images every ``r1_every`` batches and
  style mixing (two codes, a random crossover layer) with probability ``mixing_prob``:
  L_D = E[softplus(D(G(z)))] + E[softplus(-D(x))] + gamma/2 E[||grad_x D(x)||^2],
  L_G = E[softplus(-D(G(z)))]. (Path-length regularisation is left out at these sizes.)

At the end of fit the EMA generator and the discriminator are written as ``generator.pt`` in the
run directory, in the format ``generators.load_generator`` reads.
"""
from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.images import log_image, save_grid
from common.io import atomic_torch_save
from common.preemption import stopped_by_signal
from common.seeds import PRETRAIN_SAMPLE_SEED
from common.training import averaged_backward, batches_done
from generators import load_generator
from generators.base import Generator
from generators.weights import WEIGHTS_FORMAT

LOSSES = ("hinge", "nonsaturating")


class GANPretraining(pl.LightningModule):
    """Trains a generator and its discriminator on batches of ``{"images": ...}``.

    Args:
        generator: the (trainable) generator to train, in its Z space.
        discriminator: its discriminator.
        loss: ``hinge`` or ``nonsaturating`` (see the module docstring).
        lr_g, lr_d: Adam learning rates; betas: Adam betas for both.
        ema_decay: decay of the generator's weight average.
        r1_gamma, r1_every: weight and interval (batches) of the lazy R1 penalty (0: none).
        mixing_prob: probability of style mixing in a batch (style-based generators).
        sample_every_n_steps: how often to save and log a grid of EMA samples (fixed latents).
        num_samples: images in that grid.
        channels_last: train G and D in the channels-last memory format (same results; about
            17% faster a batch on a CPU for the 32 px StyleGAN2, see bench/pretrain_step.py).
    """

    optimizer_steps_per_batch = 2  # D then G: what trainer.global_step counts

    # Options a resume may change (train.py compares the others with the checkpoint's): the
    # configured learning rates win over the stored ones (on_train_start).
    resume_free = ("lr_g", "lr_d")

    def __init__(self, generator: Generator, discriminator: torch.nn.Module, loss: str = "hinge",
                 lr_g: float = 2e-4, lr_d: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 ema_decay: float = 0.999, r1_gamma: float = 0.0, r1_every: int = 16,
                 mixing_prob: float = 0.0, sample_every_n_steps: int = 1000,
                 num_samples: int = 64, channels_last: bool = True) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"unknown GAN loss {loss!r}: use one of {list(LOSSES)}")
        if generator.space != "z":
            raise UserError("GAN pretraining draws z: build the generator with space z")
        if mixing_prob and not generator.style_based:
            raise UserError("style mixing needs a style-based generator: set mixing_prob 0")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.generator, self.discriminator = generator, discriminator
        self.ema = copy.deepcopy(generator).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.register_buffer("fixed_latents",
                             torch.randn(num_samples, generator.z_dim,
                                         generator=torch.Generator().manual_seed(PRETRAIN_SAMPLE_SEED)))

    def setup(self, stage: str) -> None:
        # Before the strategy wraps the networks (DDP) and the optimizers are built; only the
        # 4-D tensors have the format (the modulated convolutions' 5-D weights stay as they are).
        if self.hparams.channels_last:
            for p in (*self.generator.parameters(), *self.discriminator.parameters()):
                if p.ndim == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        return (torch.optim.Adam(self.generator.parameters(), self.hparams.lr_g, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), self.hparams.lr_d, betas=betas))

    def on_train_start(self) -> None:
        # The configured learning rates win over those in a resumed checkpoint's optimizer
        # states (moments and step counts still resume), so a schedule can change them.
        for opt, lr in zip(self.optimizers(), (self.hparams.lr_g, self.hparams.lr_d)):
            for group in opt.optimizer.param_groups if hasattr(opt, "optimizer") else opt.param_groups:
                group["lr"] = lr

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch["images"]
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        rng = torch.Generator().manual_seed(int(batch["seed"]))
        fake = self.generate(real.shape[0], rng).to(real.device)
        hinge = self.hparams.loss == "hinge"
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        if hinge:
            loss_d = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
        else:
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        done = batches_done(self.trainer)
        if self.hparams.r1_gamma and done % self.hparams.r1_every == 0:
            loss_d = loss_d + self.r1_penalty(real)
        opt_d.zero_grad(set_to_none=True)
        averaged_backward(self, loss_d, self.discriminator.parameters())
        opt_d.step()

        self.toggle_optimizer(opt_g)  # D's weights need no gradients in G's step
        d_fake = self.discriminator(fake)
        loss_g = -d_fake.mean() if hinge else F.softplus(-d_fake).mean()
        opt_g.zero_grad(set_to_none=True)
        averaged_backward(self, loss_g, self.generator.parameters())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if not (math.isfinite(loss_d.item()) and math.isfinite(loss_g.item())):
            raise FloatingPointError(f"GAN loss is not finite at batch {batches_done(self.trainer)} "
                                     f"(D {loss_d.item()}, G {loss_g.item()}); the last good "
                                     "checkpoint is kept: lower the learning rates and resume")
        self._update_ema(batches_done(self.trainer))
        self.log_dict({"train/loss_d": loss_d, "train/loss_g": loss_g}, prog_bar=True)

    def generate(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """Fakes from the batch's own draws (z, and the style-mixing crossover)."""
        z = torch.randn(n, self.generator.z_dim, generator=rng).to(self.device)
        mixing = self.hparams.mixing_prob
        if not mixing or torch.rand((), generator=rng).item() >= mixing:
            return self.generator(z)
        g = self.generator
        z2 = torch.randn(n, g.z_dim, generator=rng).to(self.device)
        cut = int(torch.randint(1, g.num_layers, (), generator=rng))
        ws = torch.cat([g.mapping(z)[:, None].expand(-1, cut, -1),
                        g.mapping(z2)[:, None].expand(-1, g.num_layers - cut, -1)], dim=1)
        return g.synthesis(ws)

    def r1_penalty(self, real: torch.Tensor) -> torch.Tensor:
        """Lazy R1 (Mescheder et al. 2018), scaled by the interval it is applied at."""
        real = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(real).sum(), real, create_graph=True)
        return self.hparams.r1_gamma / 2 * grad.pow(2).sum([1, 2, 3]).mean() * self.hparams.r1_every

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        # Short warm-up so the average is not dominated by the random initial weights.
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))
        for avg, cur in zip(self.ema.parameters(), self.generator.parameters()):
            avg.lerp_(cur, 1 - decay)
        for avg, cur in zip(self.ema.buffers(), self.generator.buffers()):
            avg.copy_(cur)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every, done = self.hparams.sample_every_n_steps, batches_done(self.trainer)
        if every and done % every == 0:
            self.save_samples(f"step_{done:06d}")

    @torch.no_grad()
    def save_samples(self, tag: str) -> Path | None:
        if self.trainer.global_rank != 0:
            return None
        images = self.ema(self.fixed_latents)
        path = save_grid(images, Path(self.trainer.default_root_dir) / "samples" / f"{tag}.png",
                         nrow=int(math.sqrt(len(images))))
        log_image(self.loggers, "samples", path, step=self.trainer.global_step, caption=tag)
        return path

    def export(self, path: str | Path, info: dict | None = None) -> Path:
        """Write the EMA generator and the discriminator in the shipped-weights format."""
        return save_weights(path, self.ema.adapter, self.ema.config(), self.discriminator.config(),
                            self.ema.state_dict(), self.discriminator.state_dict(),
                            dict(info or {}, batches=batches_done(self._trainer)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What export_checkpoint needs to rebuild the networks from a checkpoint alone.
        checkpoint["architecture"] = self.ema.adapter
        checkpoint["generator_config"] = self.ema.config()
        checkpoint["discriminator_config"] = self.discriminator.config()

    def on_train_end(self) -> None:
        if stopped_by_signal(self.trainer):  # not finished: resumed later, exported then
            return
        if self.trainer.global_rank == 0:
            self.save_samples("final")
            self.export(Path(self.trainer.default_root_dir) / "generator.pt")


def save_weights(path: str | Path, architecture: str, generator_config: dict,
                 discriminator_config: dict | None, generator_state: dict,
                 discriminator_state: dict | None, info: dict) -> Path:
    """The one writer of the weights format that ``generators.load_generator`` reads. A
    generator trained without a discriminator (GLO) passes None for both of its entries, and
    the file has none."""
    blob = {"format": WEIGHTS_FORMAT, "architecture": architecture,
            "generator_config": generator_config, "generator": generator_state, "info": info}
    if discriminator_state is not None:
        blob.update(discriminator_config=discriminator_config, discriminator=discriminator_state)
    return atomic_torch_save(blob, path)


def submodule_state(state: dict, prefix: str) -> dict:
    """The entries of a module's state dict under ``prefix.``, with the prefix removed."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def samples_path(weights_path: str | Path) -> Path:
    """Where the sample grid of an exported weights file goes: ``<stem>_samples.png`` beside it."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.stem + "_samples.png")


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, samples: bool = True) -> Path:
    """Write the weights file of a pretraining checkpoint (e.g. a run stopped early), and with
    ``samples`` the grid of the run's fixed latents drawn by the exported generator (the grid
    training saves, so a shipped file's picture comes from the same command).

    ``python -m generators.pretrain outputs/pretrain_dcgan/checkpoints/last.ckpt out.pt``
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "generator_config" not in ckpt:
        raise UserError(f"{ckpt_path} is not a checkpoint of GAN pretraining "
                         "(it records no generator_config)")
    state = ckpt["state_dict"]
    ema, disc = submodule_state(state, "ema"), submodule_state(state, "discriminator")
    info = {"batches": ckpt["global_step"] // GANPretraining.optimizer_steps_per_batch,
            "from_checkpoint": str(ckpt_path)}
    out_path = save_weights(out_path, ckpt.get("architecture", "dcgan"), ckpt["generator_config"],
                            ckpt["discriminator_config"], ema, disc, info)
    if samples and "fixed_latents" in state:
        latents = state["fixed_latents"]
        with torch.no_grad():
            images = load_generator(out_path)(latents)
        save_grid(images, samples_path(out_path), nrow=int(math.sqrt(len(latents))))
    return out_path


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a GAN pretraining checkpoint as a "
                                     "weights file (and its sample grid, <out>_samples.png).")
    parser.add_argument("checkpoint", help="a pretraining checkpoint, e.g. checkpoints/last.ckpt")
    parser.add_argument("out", help="the weights file to write, e.g. my_generator.pt")
    parser.add_argument("--no-samples", action="store_true", help="do not write the sample grid")
    args = parser.parse_args()
    out = export_checkpoint(args.checkpoint, args.out, samples=not args.no_samples)
    print(out)
    if samples_path(out).is_file() and not args.no_samples:
        print(samples_path(out))  # (a checkpoint without fixed latents has no grid to draw)


if __name__ == "__main__":
    main()
