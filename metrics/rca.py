"""Reconstructor Classification Accuracy by the protocol of Voynov & Babenko (ICML 2020).

A fresh reconstructor R is trained on a *fixed* set of K directions to tell, from G(z) and
G(shift(z, k, eps)), which direction k was taken (cross-entropy + 0.25 |eps_hat - eps|, eps as
in training: shift_scale * U(-1, 1), pushed out of (-min_shift, min_shift)); RCA is its accuracy
on held-out shifts. Directions that change the image in distinct ways score high; K copies of
one direction score 1/K (chance). Every direction set gets the same R, budget and seeds.

Several sets (a run's directions and its baselines) are trained in one loop
(``reconstructor_accuracies``): each step draws the latents once, renders G(z) once for every
set, and steps each set's own reconstructor on its own shifts (the same k and eps draws as a set
trained alone, so the numbers are those of separate runs). On request, each reconstructor stops
when its accuracy on held-out validation shifts has stopped rising (``patience``), and the
generator's images are read at a reduced size (``image_size``); neither is a default, because
both moved the figures (docs/results.md, 'Evaluation cost'). The generator's forward
passes and the reconstructors' steps are where the evaluation's time goes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from tqdm.auto import tqdm

from common.checks import integer, number
from common.errors import UserError
from common.seeds import RCA_EVAL_FIRST_STEP, RCA_VALIDATION_FIRST_STEP
from datamodules.streams import batch_seed
from regressors.reconstructor import build_reconstructor, reconstruction_loss, sample_shifts


def recorded_alpha_range(directions) -> float | None:
    """The range a Directions artifact records (``alpha_range()``); None for a plain set or a
    file that records none (concrete steps are then used as they are; "auto" ones refused)."""
    recorded = getattr(directions, "alpha_range", None)
    if not callable(recorded):
        return None
    try:
        return recorded()[0]
    except UserError:
        return None


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


def read_size(image_size: int | None, resolution: int) -> int:
    """The side the reconstructor reads a ``resolution`` px image at: ``image_size`` (at most
    the resolution), or the resolution itself for None. Reading 64 px images at 32 costs a
    quarter of the reconstructor's work but lowered RCA by 0.03-0.04 on a 64 px StyleGAN2
    (docs/results.md, 'Evaluation cost'): not a default."""
    return resolution if image_size is None else min(int(image_size), resolution)


@dataclass
class RCASettings:
    """Budget of the protocol.

    Args:
        steps: training batches of the fresh reconstructor, at most (``patience`` may stop it
            earlier).
        batch_size: latents per training batch.
        eval_samples: held-out shifts scored (split across processes).
        shift_scale, min_shift: the range of eps; ``"auto"`` takes them from the directions'
            own training range r (r and r / 12), see
            ``metrics.evaluation.EvaluationSettings.resolve``.
        lr: Adam's learning rate for R.
        reconstructor: ``auto``, ``lenet`` or a timm name (see regressors/reconstructor.py).
        seed: seeds R's initialisation, the training batches and the held-out shifts.
        check_every: batches between two checks of R's accuracy on ``val_samples`` held-out
            validation shifts (other shifts than the scored ones), when ``patience`` is set.
        patience: checks in a row without a gain of ``min_delta`` over the best accuracy
            before R stops; 0 (the default): no checks, R always trains ``steps`` batches.
            Not a default because a reconstructor can sit at chance for 200 batches and then
            rise: on the built-in StyleGAN2 (SeFa, seed 2) patience 3 stopped the baselines'
            at 200 batches at RCA 0.06, where the full budget reaches 0.26-0.28
            (docs/results.md, 'Evaluation cost').
        min_delta: the least gain of validation accuracy that counts.
        val_samples: validation shifts of the stopping rule (split across processes).
        image_size: the side R reads the images at, area-averaged down to it (``read_size``):
            a number of pixels, or None (as drawn: the default).
    """

    steps: int = 500
    batch_size: int = 64
    eval_samples: int = 1024
    shift_scale: float | str = "auto"
    min_shift: float | str = "auto"
    lr: float = 1e-3
    reconstructor: str = "auto"
    seed: int = 0
    check_every: int = 50
    patience: int = 0
    min_delta: float = 0.01
    val_samples: int = 512
    image_size: int | None = None

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
        integer(self.check_every, f"{prefix}.check_every", low=0, hint="0: no checks")
        integer(self.patience, f"{prefix}.patience", low=0, hint="0: never stop early")
        if self.patience and not self.check_every:
            raise UserError(f"{prefix}.patience={self.patience}: needs "
                             f"{prefix}.check_every > 0 (the checks it counts), or patience=0")
        number(self.min_delta, f"{prefix}.min_delta", low=0)
        integer(self.val_samples, f"{prefix}.val_samples", low=1)
        if self.image_size is not None:
            integer(self.image_size, f"{prefix}.image_size", low=8, hint="null: as drawn")
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


@dataclass
class _Trainee:
    """One set's fresh reconstructor, its optimiser and its stopping record."""

    directions: Any
    settings: RCASettings
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    history: list[list[float]] = field(default_factory=list)   # [batches, validation accuracy]
    best: float = float("-inf")
    since_best: int = 0
    steps: int = 0
    stopped: bool = False

    def observe(self, batches: int, accuracy: float) -> None:
        """One validation check after ``batches`` batches; stops R after ``patience`` checks
        in a row without a gain of ``min_delta`` over the best so far."""
        self.history.append([batches, round(accuracy, 4)])
        if accuracy >= self.best + self.settings.min_delta:
            self.best, self.since_best = accuracy, 0
        else:
            self.since_best += 1
        if self.settings.patience and self.since_best >= self.settings.patience:
            self.stopped = True


def _reader(resolution: int, size: int):
    """The images as R reads them: area-averaged down to ``size`` px where it is smaller."""
    if size >= resolution:
        return lambda images: images
    return lambda images: F.interpolate(images, size=(size, size), mode="area")


def _shifted_pairs(trainees: list[_Trainee], generator, n: int, rng: torch.Generator, read
                   ) -> Iterator[tuple[_Trainee, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(trainee, x0, x1, k, eps)`` for each trainee from one draw of ``n`` latents: G(z) once
    for all, then each set's k and eps drawn from the same stream position (what a set trained
    alone draws) and its shifted images."""
    z, y = generator.draw(n, generator=rng)
    after_latents = rng.get_state()
    with torch.no_grad():
        x0 = read(generator(z, y))
    for trainee in trainees:
        rng.set_state(after_latents)
        k = torch.randint(trainee.directions.num_directions, (n,), generator=rng).to(z.device)
        eps = sample_shifts(n, rng, trainee.settings.shift_scale,
                            trainee.settings.min_shift).to(z.device)
        with torch.no_grad():
            x1 = read(generator(shifted(trainee.directions, z, k, eps, y), y))
        yield trainee, x0, x1, k, eps


def _held_out(trainees: list[_Trainee], generator, samples: int, first_step: int,
              settings: RCASettings, rank: int, world_size: int, read) -> Iterator[list]:
    """Batches of held-out shifts (this process's share of ``samples``), each a list of
    ``(trainee, x0, x1, k, eps)``; seeded from stream positions first_step, first_step - 1, ..."""
    share = -(-samples // world_size)  # ceil
    for i, start in enumerate(range(0, share, settings.batch_size)):
        rng = torch.Generator().manual_seed(batch_seed(settings.seed, first_step - i, rank))
        yield list(_shifted_pairs(trainees, generator, min(settings.batch_size, share - start),
                                  rng, read))


def _score(trainee: _Trainee, metric: RCAAccuracy, x0, x1, k, eps) -> None:
    """R's guesses of one batch of held-out shifts, in eval mode, into ``metric``."""
    trainee.model.eval()
    with torch.no_grad():
        logits, eps_hat = trainee.model(x0, x1)
    metric.update(logits, k, eps_hat, eps)
    trainee.model.train()


def reconstructor_accuracies(sets: Mapping[str, Any], generator, settings: RCASettings | None = None,
                             rank: int = 0, world_size: int = 1, progress: bool = True,
                             **metric_kwargs) -> dict[str, dict[str, Any]]:
    """RCA of several fixed direction sets (any objects with ``num_directions`` and
    ``shift``), trained in one loop on shared draws; ``{name: {"metrics": {rca,
    rca_shift_error, rca_steps}, "training": {...}}}``, ``training`` saying how many batches
    each R trained, whether it stopped early, and its validation history.

    Every set gets the numbers it gets alone: its own R from the same initial weights, the
    same latents, k and eps at every step (each set's shifts resolved from its own alpha
    range). Every process trains the same reconstructors (same seeds) and scores its share of
    the held-out shifts; the metric sums the shares, and the stopping rule reads the accuracy
    summed over processes, so every process stops at the same batch.
    """
    settings = settings or RCASettings()
    device = generator.device
    size = read_size(settings.image_size, generator.resolution)
    read = _reader(generator.resolution, size)
    trainees: dict[str, _Trainee] = {}
    for name, directions in sets.items():
        own = settings.resolve(recorded_alpha_range(directions))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(own.seed)
            model = build_reconstructor(directions.num_directions, size, own.reconstructor).to(device)
        trainees[name] = _Trainee(directions, own, model,
                                  torch.optim.Adam(model.parameters(), lr=own.lr))
    everyone = list(trainees.values())
    validation: dict[int, list] = {}
    checking = bool(settings.patience and settings.check_every)  # no stopping rule: no checks
    if checking and settings.steps:  # drawn once, read at every check
        for batch in _held_out(everyone, generator, settings.val_samples, RCA_VALIDATION_FIRST_STEP,
                               settings, rank, world_size, read):
            for trainee, *pair in batch:
                validation.setdefault(id(trainee), []).append(pair)
    names = ", ".join(trainees)
    bar = tqdm(range(settings.steps), desc=f"RCA: {len(trainees)} fresh reconstructor"
               f"{'s' if len(trainees) > 1 else ''} ({names})", leave=False,
               disable=not progress or rank != 0)
    for step in bar:
        active = [t for t in everyone if not t.stopped]
        if not active:
            break
        rng = torch.Generator().manual_seed(batch_seed(settings.seed, step, 0))
        for trainee, x0, x1, k, eps in _shifted_pairs(active, generator, settings.batch_size, rng, read):
            logits, eps_hat = trainee.model(x0, x1)
            loss = reconstruction_loss(logits, eps_hat, k, eps)[0]
            trainee.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainee.optimizer.step()
            trainee.steps = step + 1
        if checking and (step + 1) % settings.check_every == 0:
            for trainee in active:
                metric = RCAAccuracy(**metric_kwargs).to(device)
                for pair in validation[id(trainee)]:
                    _score(trainee, metric, *pair)
                trainee.observe(step + 1, metric.compute()["rca"])  # every process's share
            bar.set_postfix_str(" ".join(f"{n}:{t.history[-1][1]:.2f}{'*' if t.stopped else ''}"
                                         for n, t in trainees.items() if t.history))
    bar.close()
    scored = {id(t): RCAAccuracy(**metric_kwargs).to(device) for t in everyone}
    for batch in _held_out(everyone, generator, settings.eval_samples, RCA_EVAL_FIRST_STEP,
                           settings, rank, world_size, read):
        for trainee, *pair in batch:
            _score(trainee, scored[id(trainee)], *pair)
    out = {}
    for name, trainee in trainees.items():
        metrics = scored[id(trainee)].compute()
        metrics["rca_steps"] = trainee.steps
        out[name] = {"metrics": metrics,
                     "training": {"batches": trainee.steps, "max_batches": settings.steps,
                                  "stopped_early": trainee.steps < settings.steps,
                                  "image_size": size, "validation": trainee.history}}
    return out


def reconstructor_accuracy(directions, generator, settings: RCASettings | None = None,
                           rank: int = 0, world_size: int = 1, progress: bool = True,
                           **metric_kwargs) -> dict[str, float]:
    """RCA of one fixed direction set: ``{rca, rca_shift_error, rca_steps}``
    (``reconstructor_accuracies`` of that set alone)."""
    return reconstructor_accuracies({"directions": directions}, generator, settings, rank,
                                    world_size, progress, **metric_kwargs)["directions"]["metrics"]
