"""One evaluation for every method: RCA, the effect matrix (coverage, purity, gap), content
preservation and realism of a direction set on its generator, measured by an attribute
regressor. Takes any object with ``num_directions`` and ``shift(latent, index, alpha)``
(linear, warped or walked directions alike), never a method's training code.

Each process scores its share of the samples; the torchmetrics Metrics sum the shares, so the
same call works in one process and in every process of a DDP run.

On a conditional generator the samples carry their classes through every generator call and
every shift (a class-dependent set gives each latent its class's direction), and the metrics
that are means over samples (effects, content, D's scores) are also given per class
(``per_class``), for the classes the generator draws (at most ``MAX_CLASSES`` of them).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from common.checks import integer, number
from common.errors import UserError
from common.seeds import EVALUATION_FIRST_STEP
from datamodules.streams import batch_seed
from metrics.content import ContentPreservation
from metrics.effects import EffectMatrix
from metrics.rca import RCASettings, auto_step, reconstructor_accuracies, recorded_alpha_range, shifted
from metrics.realism import DiscriminatorScore, feature_fid

MAX_CLASSES = 50  # per-class metrics for at most this many classes (set generator.classes)


def drawn_classes(generator) -> list[int] | None:
    """The classes a conditional generator draws (its ``classes`` option, else every class);
    None for an unconditional one."""
    if not getattr(generator, "num_classes", None):
        return None
    return list(getattr(generator, "classes", None) or range(generator.num_classes))


def _rows(value, rows: torch.Tensor | None):
    """The samples ``rows`` (a mask; None: all) of a tensor or of a regressor's predictions."""
    if rows is None or value is None:
        return value
    if isinstance(value, dict):
        return {k: _rows(v, rows) for k, v in value.items()}
    return value[rows]


def summary_metrics(summary: dict[str, Any], num_directions: int) -> dict[str, float]:
    """The table's numbers of an effect-matrix summary (``metrics.effects.summarise``)."""
    # Purity and gap compare directions: with one they are 1/F and 1 whatever it does.
    shown = ("coverage", "purity", "gap", "focus") if num_directions > 1 else ("coverage", "focus")
    return {k: summary[k] for k in shown}


def effect_details(summary: dict[str, Any], factors: Sequence[str], matrix: torch.Tensor,
                   spread: torch.Tensor) -> dict[str, Any]:
    """What evaluation.json keeps of an effect matrix besides the table's numbers."""
    return {"factors": list(factors), "effect_matrix": matrix.tolist(),
            "factor_spread": spread.tolist(), "num_factors": summary["num_factors"],
            "best_direction": summary["best_direction"],
            "per_factor_purity": summary["per_factor_purity"],
            "per_factor_gap": summary["per_factor_gap"],
            "dominant_factor": summary["dominant_factor"]}


class _Scores:
    """The metrics that average over samples, for one group of them (all, or one class)."""

    def __init__(self, num_directions: int, regressor, settings: "EvaluationSettings",
                 lpips: torch.nn.Module | None, with_d: bool, device) -> None:
        self.content = ContentPreservation(lpips).to(device)
        self.effect = None if regressor is None else EffectMatrix(
            num_directions, regressor.factor_names, [t.kind for t in regressor.targets],
            settings.threshold, settings.min_effect, settings.alpha).to(device)
        self.d_score = DiscriminatorScore().to(device) if with_d else None

    def original(self, d0: torch.Tensor | None, before) -> None:
        if self.effect is not None:
            self.effect.observe(before)
        if self.d_score is not None:
            self.d_score.update(d0, real=True)

    def edit(self, k: int, distances: dict, before, after, d1, alpha: float) -> None:
        self.content.update(distances=distances)
        if self.effect is not None:
            self.effect.update(k, before, after, alpha)
        if self.d_score is not None:
            self.d_score.update(d1, real=False)

    def compute(self, num_directions: int) -> tuple[dict[str, float], dict[str, Any]]:
        metrics: dict[str, float] = {}
        summary: dict[str, Any] = {}
        if self.effect is not None:
            summary = self.effect.compute()
            metrics.update(summary_metrics(summary, num_directions))
        metrics.update(self.content.compute())
        # Counted by the reduced metric: every process's share is in.
        metrics["samples"] = metrics.pop("edits") // (2 * num_directions)
        if self.d_score is not None:
            metrics.update(self.d_score.compute())
        return metrics, summary


@dataclass
class EvaluationSettings:
    """What one evaluation costs and measures.

    Args:
        samples: latents z; each direction is taken from each of them both ways.
        alpha: the step of effect, content and realism measurements, in the directions' own
            units; ``"auto"``: half the range r they were trained on (see ``resolve``).
        batch_size: latents per generator pass.
        threshold: purity for a direction to control a factor alone (coverage).
        min_effect: least change of a factor at step ``alpha``, in factor spreads, for a
            direction to count (0.1: a tenth of what drawing a new image changes).
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
    min_effect: float = 0.1
    seed: int = 0
    lpips: str | None = None
    fid: bool = True
    rca: RCASettings = field(default_factory=RCASettings)

    @classmethod
    def from_dict(cls, values: dict[str, Any], prefix: str = "evaluation.settings"
                  ) -> "EvaluationSettings":
        """Settings from a config's dict, checked (``check``); a ValueError names the option
        as ``<prefix>.<field>``."""
        values = dict(values)
        rca = dict(values.pop("rca", {}) or {})
        for where, given, known in ((prefix, values, cls.__dataclass_fields__),
                                    (f"{prefix}.rca", rca, RCASettings.__dataclass_fields__)):
            unknown = set(given) - set(known)
            if unknown:
                raise UserError(f"{where}: unknown settings {sorted(unknown)}; known: "
                                 f"{sorted(known)}")
        return cls(rca=RCASettings(**rca), **values).check(prefix)

    def check(self, prefix: str = "evaluation.settings") -> "EvaluationSettings":
        """Every field of the right type and range (a ValueError naming it as
        ``<prefix>.<field>``): a count of samples or steps that is 0 would write a report of
        zeros, a step that is NaN one of NaNs."""
        integer(self.samples, f"{prefix}.samples", low=1)
        number(self.alpha, f"{prefix}.alpha", low=0, low_open=True, words=("auto",),
               hint="auto: half the alpha range the directions were trained on")
        integer(self.batch_size, f"{prefix}.batch_size", low=1)
        number(self.threshold, f"{prefix}.threshold", low=0, high=1, low_open=True)
        number(self.min_effect, f"{prefix}.min_effect", low=0)
        integer(self.seed, f"{prefix}.seed", low=0)
        if self.lpips is not None and not isinstance(self.lpips, str):
            raise UserError(f"{prefix}.lpips={self.lpips!r}: expected null, alex or vgg")
        if not isinstance(self.fid, bool):
            raise UserError(f"{prefix}.fid={self.fid!r}: expected true or false")
        self.rca.check(f"{prefix}.rca")
        return self

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
                        lpips: torch.nn.Module | None = None,
                        per_class: bool = False) -> dict[str, Any]:
    """Scores one direction set; returns flat ``metrics`` and the ``effect_matrix`` details,
    and with ``per_class`` (on a conditional generator) the metrics of each class drawn
    (``evaluate_sets`` of that set alone; ``metrics["seconds"]``: the time it took)."""
    scored = evaluate_sets({"directions": directions}, generator, regressor, settings, rank,
                           world_size, progress, lpips, ["directions"] if per_class else [])
    result = scored["results"]["directions"]
    result["metrics"]["seconds"] = scored["seconds"]["total"]
    return result


def evaluate_sets(sets: Mapping[str, Any], generator, regressor, settings: EvaluationSettings,
                  rank: int = 0, world_size: int = 1, progress: bool = True,
                  lpips: torch.nn.Module | None = None,
                  per_class: Sequence[str] = ()) -> dict[str, Any]:
    """Scores several direction sets (a run's directions and its baselines) in one pass over
    the same samples: each batch of latents is drawn and rendered once, with D's scores and
    the regressor's reading of G(z), for every set, and the sets' RCA reconstructors train in
    one loop on shared draws (``reconstructor_accuracies``). Each set's numbers are those it
    gets alone (its own steps from its own alpha range).

    Returns ``{"results": {name: {"metrics", effect matrix details, "per_class" for the sets
    named in ``per_class``, "rca_training"}}, "seconds": {"effects", "rca", "total"}}``.
    """
    start = time.perf_counter()
    device = generator.device
    own = {name: settings.resolve(recorded_alpha_range(d)) for name, d in sets.items()}
    use_fid = (regressor is not None and settings.fid
               and settings.samples > regressor.num_features)  # a full-rank covariance
    if regressor is not None:
        regressor = regressor.to(device)
    disc = getattr(generator, "discriminator", None)
    classes = drawn_classes(generator)
    classes = classes if classes is not None and len(classes) <= MAX_CLASSES else None
    states = {}
    for name, directions in sets.items():
        make = partial(_Scores, directions.num_directions, regressor, own[name], lpips,
                       disc is not None, device)
        states[name] = {"overall": make(),
                        "by_class": {c: make() for c in (classes or [])} if name in per_class else {},
                        "fid": feature_fid(regressor.num_features).to(device) if use_fid else None}

    def observe(images: torch.Tensor):
        """D's scores, the regressor's features and predictions of the images."""
        d = disc(images).flatten() if disc is not None else None
        if regressor is None:
            return d, None, None
        features, predictions = regressor.features_and_predictions(images)
        return d, features, predictions

    share = -(-settings.samples // world_size)
    batches = list(range(0, share, settings.batch_size))
    names = ", ".join(sets)
    with torch.no_grad():
        for i, first in enumerate(tqdm(batches, desc=f"evaluation: effects, content, realism ({names})",
                                       leave=False, disable=not progress or rank != 0)):
            rng = torch.Generator().manual_seed(batch_seed(settings.seed, EVALUATION_FIRST_STEP - i, rank))
            z, y = generator.draw(min(settings.batch_size, share - first), generator=rng)
            x0 = generator(z, y)
            d0, features0, before = observe(x0)  # once for every set
            for name, directions in sets.items():
                state, alpha = states[name], own[name].alpha
                overall = state["overall"]
                groups = [(None, overall)] + [(y == c, scores) for c, scores in state["by_class"].items()]
                groups = [(rows, scores) for rows, scores in groups if rows is None or rows.any()]
                if state["fid"] is not None:
                    state["fid"].update(features0, real=True)
                for rows, scores in groups:
                    scores.original(_rows(d0, rows), _rows(before, rows))
                for k in range(directions.num_directions):
                    for sign in (1.0, -1.0):
                        x1 = generator(shifted(directions, z, k, sign * alpha, y), y)
                        d1, features1, after = observe(x1)
                        if state["fid"] is not None:
                            state["fid"].update(features1, real=False)
                        distances = overall.content.distances(x0, x1)
                        for rows, scores in groups:
                            scores.edit(k, _rows(distances, rows), _rows(before, rows),
                                        _rows(after, rows), _rows(d1, rows), alpha)
    effects_done = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name, directions in sets.items():
        state, k_count = states[name], directions.num_directions
        metrics, summary = state["overall"].compute(k_count)
        if state["fid"] is not None:
            metrics["fid"] = float(state["fid"].compute())
        out: dict[str, Any] = {"metrics": metrics}
        if name in per_class and getattr(generator, "num_classes", None):
            out["per_class"] = _per_class(state["by_class"], k_count, generator)
        if summary:
            effect = state["overall"].effect
            out.update(effect_details(summary, regressor.factor_names, effect.matrix(), effect.spread()))
        results[name] = out
    # RCA: one direction has nothing to tell apart
    rca_sets = {name: d for name, d in sets.items() if d.num_directions >= 2}
    if settings.rca.steps > 0 and rca_sets:
        for name, rca in reconstructor_accuracies(rca_sets, generator, settings.rca, rank,
                                                  world_size, progress).items():
            results[name]["metrics"].update(rca["metrics"])
            results[name]["rca_training"] = rca["training"]
    done = time.perf_counter()
    return {"results": results,
            "seconds": {"effects": round(effects_done - start, 1), "rca": round(done - effects_done, 1),
                        "total": round(done - start, 1)}}


def _per_class(by_class: dict[int, _Scores], k_count: int, generator) -> dict[str, Any]:
    """``{class: metrics}`` of the classes that had samples (every process's share counted),
    or a note when the generator draws too many classes for a table."""
    if not by_class:
        return {"note": f"left out: the generator draws {len(drawn_classes(generator))} classes "
                        f"(at most {MAX_CLASSES} are tabled); set generator.classes=[...]"}
    table = {}
    for c, scores in by_class.items():
        with warnings.catch_warnings():  # a class this process drew no sample of
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            metrics, _ = scores.compute(k_count)
        if metrics["samples"]:
            table[str(c)] = metrics
    return table
