"""Voynov & Babenko, "Unsupervised Discovery of Interpretable Directions in the GAN Latent
Space", ICML 2020.

A direction set A (K directions) and a reconstructor R are trained together so that R, shown
G(z) and G(z + eps * A_k), can tell which direction k was taken and how far:

    min_{A, R}  E_{z, k, eps} [ CE(R_k(G(z), G(z + eps A_k)), k) + 0.25 * |R_eps(...) - eps| ]

with k ~ U{0..K-1} and eps ~ 6 * U(-1, 1), magnitudes below 0.5 pushed to +-0.5. Directions
that R can tell apart are the ones that change the image in distinct ways. The fixed "random"
and "id" (coordinate axes) sets train R only: they are the baselines of the Reconstructor
Classification Accuracy (RCA), the accuracy of R's guess of k.

Unlike the reference loop, G(z) is computed without a graph and no gradient flows into the
generator's weights (it is frozen): the same objective at about two thirds of the cost.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from generators.base import Generator
from lightning_modules.base import DirectionModule
from lightning_modules.directions import (DirectionSet, LinearDirections, OrthoDirections,
                                          ProjDirections)
from regressors.reconstructor import build_reconstructor, sample_shifts

DIRECTION_TYPES = ("linear", "ortho", "proj", "random", "id")


def make_directions(kind: str, latent_dim: int, num_directions: int,
                    init_seed: int | None = None) -> DirectionSet:
    """The direction sets of the paper: learned (linear, ortho, proj) or fixed (random, id)."""
    if kind == "linear":
        return LinearDirections(latent_dim, num_directions, init="randn", init_seed=init_seed)
    if kind == "ortho":
        return OrthoDirections(latent_dim, num_directions)
    if kind == "proj":
        return ProjDirections(latent_dim, num_directions)
    if kind == "random":
        return LinearDirections(latent_dim, num_directions, init="randn", trainable=False,
                                init_seed=init_seed)
    if kind == "id":
        return LinearDirections(latent_dim, num_directions, init="identity", trainable=False)
    raise ValueError(f"unknown directions_type {kind!r}; choose one of {', '.join(DIRECTION_TYPES)}")


class Voynov(DirectionModule):
    """Unsupervised directions with a reconstructor.

    Args:
        generator: the frozen generator.
        num_directions: K (must equal the latent size for ``ortho``; None: the latent size).
        directions_type: ``linear``, ``ortho``, ``proj``; ``random`` or ``id`` are fixed baselines.
        shift_scale: largest |eps|.
        min_shift: smallest |eps|.
        shift_weight: weight of the L1 term on eps (0.25 in the paper).
        reconstructor: ``"auto"`` (LeNet up to 64 px, ResNet-18 above), ``"lenet"`` or a timm name.
        reconstructor_kwargs: passed to the reconstructor (LeNet: ``width``, ``hidden``).
        init_seed: seed of the initial directions (the run's seed in configs).
        optimizer, traversal: see DirectionModule.
    """

    method_name = "voynov"

    def __init__(self, generator: Generator, num_directions: int | None = 16,
                 directions_type: str = "linear", shift_scale: float = 6.0,
                 min_shift: float = 0.5, shift_weight: float = 0.25,
                 reconstructor: str = "auto", reconstructor_kwargs: dict | None = None,
                 init_seed: int | None = 0,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        if num_directions is None:  # one per latent dimension
            num_directions = generator.latent_dim
        if num_directions < 2:
            raise ValueError(f"num_directions must be at least 2 (the reconstructor classifies "
                             f"among them), got {num_directions}")
        if not 0 <= min_shift < shift_scale:
            raise ValueError(f"shift range cannot work: need 0 <= min_shift < shift_scale, got "
                             f"min_shift={min_shift}, shift_scale={shift_scale}")
        super().__init__(generator, optimizer, dict({"alpha": shift_scale}, **(traversal or {})))
        self.save_hyperparameters(ignore=["generator", "optimizer"])
        self.directions = make_directions(directions_type, generator.latent_dim, num_directions,
                                          init_seed)
        self.reconstructor = build_reconstructor(num_directions, generator.resolution, reconstructor,
                                                 **(reconstructor_kwargs or {}))

    def step(self, batch: dict, salt: int = 0) -> dict[str, torch.Tensor]:
        z = batch["latent"]
        rng = self.batch_rng(batch, salt)
        n, num = z.shape[0], self.directions.num_directions
        k = torch.randint(num, (n,), generator=rng).to(z.device)
        eps = sample_shifts(n, rng, self.hparams.shift_scale, self.hparams.min_shift).to(z.device)
        with torch.no_grad():
            x0 = self.generator(z)
        x1 = self.generator(self.directions.shift(z, k, eps))
        logits, eps_hat = self.reconstructor(x0, x1)
        ce = F.cross_entropy(logits, k)
        shift_error = (eps_hat - eps).abs().mean()
        return {"loss": ce + self.hparams.shift_weight * shift_error, "ce": ce,
                "shift_error": shift_error, "correct": (logits.argmax(1) == k).float().sum(),
                "count": torch.tensor(float(n), device=z.device)}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.step(batch)
        self.check_finite(out["loss"])
        self.log_dict({"train/loss": out["loss"], "train/ce": out["ce"],
                       "train/shift_error": out["shift_error"],
                       "train/rca": out["correct"] / out["count"]}, prog_bar=True,
                      batch_size=batch["latent"].shape[0])
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.step(batch, salt=1)
        self.log_dict({"val/rca": out["correct"] / out["count"],
                       "val/shift_error": out["shift_error"]}, sync_dist=True, prog_bar=True,
                      batch_size=batch["latent"].shape[0])

    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """RCA on the held-out latents, in eval mode, summed over every process."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return {}
        was_training = self.training
        self.eval()
        totals = torch.zeros(3, device=self.device)
        for batch in datamodule.val_dataloader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self.step(batch, salt=1)
            totals += torch.stack([out["correct"], out["count"], out["shift_error"] * out["count"]])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        self.train(was_training)
        return {"rca": float(totals[0] / totals[1]), "shift_error": float(totals[2] / totals[1]),
                "eval_samples": int(totals[1])}
