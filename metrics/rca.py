"""Reconstructor Classification Accuracy by the protocol of Voynov & Babenko (ICML 2020).

A fresh reconstructor R is trained on a *fixed* set of K directions to tell, from G(z) and
G(shift(z, k, eps)), which direction k was taken (cross-entropy + 0.25 |eps_hat - eps|, eps as
in training: shift_scale * U(-1, 1), pushed out of (-min_shift, min_shift)); RCA is its accuracy
on held-out shifts. Directions that change the image in distinct ways score high; K copies of
one direction score 1/K (chance). Every direction set gets the same R, budget and seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchmetrics import Metric
from tqdm.auto import tqdm

from common.checks import integer, number
from common.errors import UserError
from common.seeds import RCA_EVAL_FIRST_STEP
from datamodules.streams import batch_seed
from regressors.reconstructor import build_reconstructor, reconstruction_loss, sample_shifts


def recorded_alpha_range(directions) -> float | None:
    """The range a Directions artifact records (``alpha_range()``); None for a plain set."""
    recorded = getattr(directions, "alpha_range", None)
    return recorded()[0] if callable(recorded) else None


def shifted(directions, latent: torch.Tensor, index, alpha, y: torch.Tensor | None = None):
    """``directions.shift(latent, index, alpha)``, given the latents' classes ``y`` where the
    directions depend on the class (a class-dependent Directions artifact)."""
    if getattr(directions, "class_dependent", False):
        return directions.shift(latent, index, alpha, y=y)
    return directions.shift(latent, index, alpha)


def auto_step(value: float | str, alpha_range: float | None, fraction: float) -> float:
    """``value``, or ``fraction`` of the directions' alpha range when it is ``"auto"``."""
    if value == "auto":
        if alpha_range is None:
            raise UserError("an 'auto' step needs the directions' alpha range, and none is "
                             "known: give the steps as numbers")
        return float(alpha_range) * fraction
    if isinstance(value, str):
        raise UserError(f"a step must be a number or 'auto', got {value!r}")
    return float(value)


@dataclass
class RCASettings:
    """Budget of the protocol.

    Args:
        steps: training batches of the fresh reconstructor.
        batch_size: latents per training batch.
        eval_samples: held-out shifts scored (split across processes).
        shift_scale, min_shift: the range of eps; ``"auto"`` takes them from the directions'
            own training range r (r and r / 12), see
            ``metrics.evaluation.EvaluationSettings.resolve``.
        lr: Adam's learning rate for R.
        reconstructor: ``auto``, ``lenet`` or a timm name (see regressors/reconstructor.py).
        seed: seeds R's initialisation, the training batches and the held-out shifts.
    """

    steps: int = 500
    batch_size: int = 64
    eval_samples: int = 1024
    shift_scale: float | str = "auto"
    min_shift: float | str = "auto"
    lr: float = 1e-3
    reconstructor: str = "auto"
    seed: int = 0

    def check(self, prefix: str = "rca") -> "RCASettings":
        """Every field of the right type and range, or a ValueError naming it as
        ``<prefix>.<field>`` (the option the user wrote)."""
        integer(self.steps, f"{prefix}.steps", low=0, hint="0 leaves RCA out")
        integer(self.batch_size, f"{prefix}.batch_size", low=1)
        integer(self.eval_samples, f"{prefix}.eval_samples", low=1)
        scale = number(self.shift_scale, f"{prefix}.shift_scale", low=0, low_open=True,
                       words=("auto",))
        least = number(self.min_shift, f"{prefix}.min_shift", low=0, words=("auto",))
        if not isinstance(scale, str) and not isinstance(least, str) and least > scale:
            raise UserError(f"{prefix}.min_shift={self.min_shift!r}: expected at most "
                             f"{prefix}.shift_scale={self.shift_scale!r}")
        number(self.lr, f"{prefix}.lr", low=0, low_open=True)
        if not isinstance(self.reconstructor, str):
            raise UserError(f"{prefix}.reconstructor={self.reconstructor!r}: expected auto, "
                             "lenet or a timm model name")
        integer(self.seed, f"{prefix}.seed", low=0)
        return self

    def resolve(self, alpha_range: float | None) -> "RCASettings":
        """``"auto"`` shifts from the directions' training range r: ``shift_scale`` r,
        ``min_shift`` r / 12 (an error for an unknown r: never a silent default)."""
        return replace(self, shift_scale=auto_step(self.shift_scale, alpha_range, 1.0),
                       min_shift=auto_step(self.min_shift, alpha_range, 1 / 12))


class RCAAccuracy(Metric):
    """Accuracy of the reconstructor's direction guess, and its mean |eps_hat - eps|."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for state in ("correct", "count", "shift_error"):
            self.add_state(state, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, index: torch.Tensor, eps_hat: torch.Tensor,
               eps: torch.Tensor) -> None:
        self.correct += (logits.argmax(1) == index).sum()
        self.count += index.numel()
        self.shift_error += (eps_hat - eps).abs().sum()

    def compute(self) -> dict[str, float]:
        n = float(self.count.clamp_min(1))
        return {"rca": float(self.correct) / n, "rca_shift_error": float(self.shift_error) / n}


def _shifted_pair(directions, generator, n: int, rng: torch.Generator, settings: RCASettings):
    z, y = generator.draw(n, generator=rng)
    k = torch.randint(directions.num_directions, (n,), generator=rng).to(z.device)
    eps = sample_shifts(n, rng, settings.shift_scale, settings.min_shift).to(z.device)
    with torch.no_grad():
        return generator(z, y), generator(shifted(directions, z, k, eps, y), y), k, eps


def reconstructor_accuracy(directions, generator, settings: RCASettings | None = None,
                           rank: int = 0, world_size: int = 1, progress: bool = True,
                           **metric_kwargs) -> dict[str, float]:
    """RCA of a fixed direction set (any object with ``num_directions`` and ``shift``).

    Every process trains the same reconstructor (same seeds) and scores its share of the
    held-out shifts; the metric sums the shares.
    """
    settings = (settings or RCASettings()).resolve(recorded_alpha_range(directions))
    device = generator.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_reconstructor(directions.num_directions, generator.resolution,
                                    settings.reconstructor).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps = range(settings.steps)
    for step in tqdm(steps, desc="RCA: training a fresh reconstructor", leave=False,
                     disable=not progress or rank != 0):
        rng = torch.Generator().manual_seed(batch_seed(settings.seed, step, 0))
        x0, x1, k, eps = _shifted_pair(directions, generator, settings.batch_size, rng, settings)
        logits, eps_hat = model(x0, x1)
        loss = reconstruction_loss(logits, eps_hat, k, eps)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    metric = RCAAccuracy(**metric_kwargs).to(device)
    share = -(-settings.eval_samples // world_size)  # ceil
    with torch.no_grad():
        for i, start in enumerate(range(0, share, settings.batch_size)):
            rng = torch.Generator().manual_seed(batch_seed(settings.seed, RCA_EVAL_FIRST_STEP - i, rank))
            n = min(settings.batch_size, share - start)
            x0, x1, k, eps = _shifted_pair(directions, generator, n, rng, settings)
            logits, eps_hat = model(x0, x1)
            metric.update(logits, k, eps_hat, eps)
    return metric.compute()
