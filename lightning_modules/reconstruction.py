"""What the reconstructor methods share (Voynov & Babenko, ICML 2020, and WarpedGANSpace,
Tzelepis et al., ICCV 2021): a direction set A and a reconstructor R trained together so that R,
shown G(z) and G(shift(z, k, eps)), tells which direction k was taken and how far:

    min_{A, R}  E_{z, k, eps} [ CE(R_k(G(z), G(shift(z, k, eps))), k) + w * |R_eps(...) - eps| ]

A subclass chooses the direction set (``self.directions``), how eps is drawn (``sample_eps``)
and how one training shift is applied (``train_shift``). G(z) is computed without a graph and no
gradient reaches the frozen generator's weights: the reference loops pay for both.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from common.errors import UserError
from common.seeds import TRAIN_SALT, VALIDATION_SALT
from generators.base import Generator
from lightning_modules.base import DirectionModule
from regressors.reconstructor import Reconstructor, build_reconstructor, reconstruction_loss


def check_shift_range(min_shift: float, max_shift: float, max_name: str = "max_shift") -> None:
    """A clear error for a shift range no training shift can be drawn from."""
    if not 0 <= min_shift <= max_shift or max_shift == 0:
        raise UserError(f"shift range cannot work: need 0 <= min_shift <= {max_name} and "
                         f"{max_name} > 0, got min_shift={min_shift}, {max_name}={max_shift}")


class ReconstructorMethod(DirectionModule):
    """Base of the methods trained against a reconstructor.

    Args:
        generator: the frozen generator.
        num_directions: K (checked: at least 2, the reconstructor classifies among them).
        shift_weight: weight w of the L1 term on eps (0.25 in both papers).
        reconstructor: a callable ``(num_directions, resolution) -> Reconstructor`` (in config, a
            nested ``_target_`` with ``_partial_: true``, e.g. ``build_reconstructor`` with its
            ``kind`` and the LeNet's ``width`` / ``hidden``), or a kind name: ``"auto"`` (LeNet
            up to 64 px, ResNet-18 above), ``"lenet"`` or a timm name.
        optimizer, traversal, alpha_range: see DirectionModule.
    """

    def __init__(self, generator: Generator, num_directions: int, shift_weight: float = 0.25,
                 reconstructor: str | Callable[..., Reconstructor] = "auto",
                 optimizer: Callable | None = None, traversal: dict | None = None,
                 alpha_range: float | None = None) -> None:
        if num_directions < 2:
            raise UserError(f"num_directions must be at least 2 (the reconstructor classifies "
                             f"among them), got {num_directions}")
        super().__init__(generator, optimizer, traversal, alpha_range)
        self.shift_weight = shift_weight
        if isinstance(reconstructor, str):
            reconstructor = partial(build_reconstructor, kind=reconstructor)
        self.reconstructor = reconstructor(num_directions=num_directions,
                                           resolution=generator.resolution)

    # ---- what a method chooses ----------------------------------------------------------
    def sample_eps(self, n: int, rng: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def train_shift(self, z: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The shifted latents of a training step (the direction set's own shift by default)."""
        return self.directions.shift(z, k, eps)

    # ---- the shared step ----------------------------------------------------------------
    def step(self, batch: dict, salt: int = TRAIN_SALT) -> dict[str, torch.Tensor]:
        z, y = batch["latent"], batch.get("y")
        rng = self.batch_rng(batch, salt)
        n, num = z.shape[0], self.directions.num_directions
        k = torch.randint(num, (n,), generator=rng).to(z.device)
        eps = self.sample_eps(n, rng).to(z.device)
        with torch.no_grad():
            x0 = self.generator(z, y)
        x1 = self.generator(self.train_shift(z, k, eps), y)
        logits, eps_hat = self.reconstructor(x0, x1)
        loss, ce, shift_error = reconstruction_loss(logits, eps_hat, k, eps, self.shift_weight)
        return {"loss": loss, "ce": ce,
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
        out = self.step(batch, salt=VALIDATION_SALT)
        self.log_dict({"val/rca": out["correct"] / out["count"],
                       "val/shift_error": out["shift_error"]}, sync_dist=True, prog_bar=True,
                      batch_size=batch["latent"].shape[0])

    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """RCA of the jointly trained reconstructor on the held-out latents, in eval mode,
        summed over every process."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return {}
        was_training = self.training
        self.eval()
        totals = torch.zeros(3, device=self.device)
        for batch in datamodule.val_dataloader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self.step(batch, salt=VALIDATION_SALT)
            totals += torch.stack([out["correct"], out["count"], out["shift_error"] * out["count"]])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        self.train(was_training)
        return {"rca": float(totals[0] / totals[1]), "shift_error": float(totals[2] / totals[1]),
                "eval_samples": int(totals[1])}
