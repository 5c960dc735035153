"""One evaluation for every method: RCA, the effect matrix (coverage, purity, gap), content
preservation and realism of a direction set on its generator, measured by an attribute
regressor. Takes any object with ``num_directions`` and ``shift(latent, index, alpha)``
(linear, warped or walked directions alike), never a method's training code.

Each process scores its share of the samples; the torchmetrics Metrics sum the shares, so the
same call works in one process and in every process of a DDP run.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from common.seeds import EVALUATION_FIRST_STEP
from datamodules.streams import batch_seed
from metrics.content import ContentPreservation
from metrics.effects import EffectMatrix
from metrics.rca import RCASettings, auto_step, reconstructor_accuracy, recorded_alpha_range
from metrics.realism import DiscriminatorScore, feature_fid


@dataclass
class EvaluationSettings:
    """What one evaluation costs and measures.

    Args:
        samples: latents z; each direction is taken from each of them both ways.
        alpha: the step of effect, content and realism measurements, in the directions' own
            units; ``"auto"``: half the range r they were trained on (see ``resolve``).
        batch_size: latents per generator pass.
        threshold: purity for a direction to control a factor alone (coverage).
        min_effect: least change per unit step (in units of the factor's range) that counts.
        seed: seeds the latents (and, through ``rca.seed``, the reconstructor).
        lpips: ``None`` or the LPIPS network (``alex``, ``vgg``) when its weights are on disk.
        fid: compute the Frechet distance on regressor features (needs ``samples`` above the
            regressor's feature size, 256 for the shipped one; left out otherwise).
        rca: the reconstructor protocol's budget (``rca.steps=0`` leaves RCA out).
    """

    samples: int = 512
    alpha: float | str = "auto"
    batch_size: int = 128
    threshold: float = 0.6
    min_effect: float = 0.01
    seed: int = 0
    lpips: str | None = None
    fid: bool = True
    rca: RCASettings = field(default_factory=RCASettings)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EvaluationSettings":
        values = dict(values)
        rca = RCASettings(**dict(values.pop("rca", {}) or {}))
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown evaluation settings {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        settings = cls(rca=rca, **values)
        settings.resolve(1.0)  # a step that is neither a number nor "auto" fails here
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self, alpha_range: float | None) -> "EvaluationSettings":
        """Concrete steps for directions trained on |alpha| <= ``alpha_range`` (the range a
        Directions file records, or the default the report names; None: "auto" is an
        error). ``"auto"`` becomes: ``alpha`` r / 2, ``rca.shift_scale`` r,
        ``rca.min_shift`` r / 12. A GANalyze direction trained on alpha in [-0.5, 0.5] is then
        measured at 0.25, not far outside its range; unit-length latent directions at 3.
        Numbers given by the user are kept."""
        return replace(self, alpha=auto_step(self.alpha, alpha_range, 0.5),
                       rca=self.rca.resolve(alpha_range))


def evaluate_directions(directions, generator, regressor, settings: EvaluationSettings,
                        rank: int = 0, world_size: int = 1, progress: bool = True,
                        lpips: torch.nn.Module | None = None) -> dict[str, Any]:
    """Scores one direction set; returns flat ``metrics`` and the ``effect_matrix`` details."""
    settings = settings.resolve(recorded_alpha_range(directions))
    start = time.perf_counter()
    device = generator.device
    effect = fid = None
    if regressor is not None:
        regressor = regressor.to(device)
        kinds = [t.kind for t in regressor.targets]
        effect = EffectMatrix(directions.num_directions, regressor.factor_names, kinds,
                              settings.threshold, settings.min_effect).to(device)
        # A Frechet distance needs more samples than feature dimensions (a full-rank covariance).
        if settings.fid and settings.samples > regressor.num_features:
            fid = feature_fid(regressor.num_features).to(device)
    content = ContentPreservation(lpips).to(device)
    disc = getattr(generator, "discriminator", None)
    d_score = DiscriminatorScore().to(device) if disc is not None else None

    def observe(images: torch.Tensor, real: bool):
        if d_score is not None:
            d_score.update(disc(images).flatten(), real=real)
        if regressor is None:
            return None
        features, predictions = regressor.features_and_predictions(images)
        if fid is not None:
            fid.update(features, real=real)
        return predictions

    share = -(-settings.samples // world_size)
    batches = list(range(0, share, settings.batch_size))
    with torch.no_grad():
        for i, first in enumerate(tqdm(batches, desc="evaluation: effects, content, realism",
                                       leave=False, disable=not progress or rank != 0)):
            rng = torch.Generator().manual_seed(batch_seed(settings.seed, EVALUATION_FIRST_STEP - i, rank))
            z, y = generator.draw(min(settings.batch_size, share - first), generator=rng)
            x0 = generator(z, y)
            before = observe(x0, real=True)
            for k in range(directions.num_directions):
                for sign in (1.0, -1.0):
                    x1 = generator(directions.shift(z, k, sign * settings.alpha), y)
                    after = observe(x1, real=False)
                    content.update(x0, x1)
                    if effect is not None:
                        effect.update(k, before, after, settings.alpha)
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {}
    if effect is not None:
        summary = effect.compute()
        # Purity and gap compare directions: with one they are 1/F and 1 whatever it does.
        shown = ("coverage", "purity", "gap", "focus") if directions.num_directions > 1 else ("coverage", "focus")
        metrics.update({k: summary[k] for k in shown})
    metrics.update(content.compute())
    # Counted by the reduced metric: every process's share is in.
    metrics["samples"] = metrics.pop("edits") // (2 * directions.num_directions)
    if d_score is not None:
        metrics.update(d_score.compute())
    if fid is not None:
        metrics["fid"] = float(fid.compute())
    if settings.rca.steps > 0 and directions.num_directions >= 2:  # one direction: nothing to tell apart
        metrics.update(reconstructor_accuracy(directions, generator, settings.rca, rank,
                                              world_size, progress))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    if effect is None:
        return {"metrics": metrics}
    return {
        "metrics": metrics,
        "factors": regressor.factor_names,
        "effect_matrix": effect.matrix().tolist(),
        "num_factors": summary["num_factors"],
        "best_direction": summary["best_direction"],
        "per_factor_purity": summary["per_factor_purity"],
        "per_factor_gap": summary["per_factor_gap"],
        "dominant_factor": summary["dominant_factor"],
    }
