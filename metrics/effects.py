"""What each direction does to each factor: the effect matrix and the scores read from it.

    E[k, f] = E_{z, s = +-1} | f(G(shift(z, k, s * alpha))) - f(G(z)) | / (alpha * spread_f)

with f measured by an attribute regressor. The change of one factor is measured in the factor's
own terms (the value for continuous factors in [0, 1], the distance on the circle for angles
(period 1), the total variation between class probabilities for categorical ones, the
probability for binary ones), then divided by the factor's spread: the mean change between two
independent samples of the generator, read by the same regressor (``observe``). Without it the
factors' units differ by a factor of about 2.6 on the shapes world (two random samples differ by
0.67 in shape, 0.25 in hue), and a direction that turns only the hue lost its purity to the
small shape flips every edit causes (docs/results.md, "Coverage against MIG"). An effect of 1
per unit step moves a factor as much as drawing a new sample does. A factor that is undefined in
either image (the rotation of a circle) does not count there.

From E, with purity P[k, f] = E[k, f] / sum_f' E[k, f']:
- coverage: the number of factors f that some direction controls alone: P[k, f] >= threshold
  (0.6) with a change of at least ``min_effect`` (0.1 spreads) at the measured step alpha, so
  that a direction too weak to see (a tenth of what a new draw changes) never counts, whatever
  the units of its steps;
- purity: the mean over factors of the best P[k, f] (over directions with that least effect);
- gap (MIG-like): the mean over factors of (E_(1) - E_(2)) / E_(1), the top two effects on f;
- focus: the mean over directions (with that least effect) of max_f P[k, f], how much of what a
  direction does goes to the factor it moves most. Unlike purity and gap, which compare
  directions, it says something of a single direction (GANalyze, one Steerability slider).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torchmetrics import Metric

from regressors.attributes import circular_distance


def factor_change(kind: str, before: torch.Tensor, after: torch.Tensor,
                  probs_before: torch.Tensor | None = None,
                  probs_after: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample change of one factor, in units of its range."""
    if kind == "categorical":
        return 0.5 * (probs_after - probs_before).abs().sum(1)
    if kind == "circular":
        return circular_distance(before, after)
    return (after - before).abs()


def mean_factor_changes(targets: Sequence[Any], before: dict[str, Any],
                        after: dict[str, Any]) -> torch.Tensor:
    """The mean change of each of a regressor's factors (``targets``) between two decoded
    predictions (``AttributeRegressor.predict``) of the same samples, over the samples where the
    factor is defined in both (float64, one value per factor)."""
    out = torch.zeros(len(targets), dtype=torch.float64, device=before["values"].device)
    for f, t in enumerate(targets):
        valid = before["valid"][:, f] & after["valid"][:, f]
        change = factor_change(t.kind, before["values"][:, f], after["values"][:, f],
                               before["probs"].get(t.name), after["probs"].get(t.name))
        out[f] = change[valid].double().sum() / valid.sum().clamp_min(1)
    return out


SPREAD_FLOOR = 1e-3  # a factor the generator never varies: its effects are read against this


class EffectMatrix(Metric):
    """Accumulates E[k, f] over batches (and processes: the sums reduce across DDP ranks).
    The spread of each factor comes from ``observe`` on the unedited images; without any
    (one sample per batch) the effects stay in the factors' own units.

    Args:
        num_directions: K.
        names, kinds: the regressor's factors (``regressors.attributes.Target`` kinds).
        threshold: purity a direction needs to count as controlling a factor alone.
        min_effect: least change at the measured step (in factor spreads) for a direction
            to count at all.
        step: the measured step |alpha| (every update's).
    """

    full_state_update = False

    def __init__(self, num_directions: int, names: Sequence[str], kinds: Sequence[str],
                 threshold: float = 0.6, min_effect: float = 0.1, step: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names, self.kinds = list(names), list(kinds)
        self.threshold, self.min_effect = threshold, min_effect
        self.step = abs(step)  # the measured step alpha, which min_effect is read at
        shape = (num_directions, len(self.names))
        self.add_state("total", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("spread_total", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("spread_count", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")

    def _changes(self, before: dict[str, Any], after: dict[str, Any]):
        """Per factor: the changes of the samples where it is defined in both, and their count."""
        for f, (name, kind) in enumerate(zip(self.names, self.kinds)):
            change = factor_change(kind, before["values"][:, f], after["values"][:, f],
                                   before["probs"].get(name), after["probs"].get(name))
            valid = before["valid"][:, f] & after["valid"][:, f]
            yield f, change[valid].double(), valid.sum()

    def observe(self, before: dict[str, Any]) -> None:
        """The spread: each unedited sample against the next one of its batch (independent
        draws), in the factors' own units."""
        if before["values"].shape[0] < 2:
            return
        after = {"values": before["values"].roll(1, 0), "valid": before["valid"].roll(1, 0),
                 "probs": {k: v.roll(1, 0) for k, v in before["probs"].items()}}
        for f, change, count in self._changes(before, after):
            self.spread_total[f] += change.sum()
            self.spread_count[f] += count

    def update(self, index: int, before: dict[str, Any], after: dict[str, Any], alpha: float) -> None:
        """``before`` / ``after``: the regressor's decoded predictions (``values``, ``valid``,
        ``probs``) for G(z) and for the shifted latents."""
        for f, change, count in self._changes(before, after):
            self.total[index, f] += (change / abs(alpha)).sum()
            self.count[index, f] += count

    def spread(self) -> torch.Tensor:
        """Each factor's mean change between independent samples (1 where none was observed)."""
        measured = self.spread_total / self.spread_count.clamp_min(1)
        return torch.where(self.spread_count > 0, measured.clamp_min(SPREAD_FLOOR),
                           torch.ones_like(measured)).float()

    def raw_matrix(self) -> torch.Tensor:
        """E[k, f] per unit step in the factors' own units."""
        return (self.total / self.count.clamp_min(1)).float()

    def matrix(self) -> torch.Tensor:
        """E[k, f] per unit step in units of each factor's spread."""
        return self.raw_matrix() / self.spread()

    def compute(self) -> dict[str, Any]:
        return summarise(self.matrix(), self.threshold, self.min_effect, self.step)


def summarise(effects: torch.Tensor, threshold: float = 0.6, min_effect: float = 0.1,
              step: float = 1.0) -> dict[str, Any]:
    """Coverage, purity and gap of an effect matrix ``K x F`` per unit step, measured at
    ``step`` (see the module docstring)."""
    purity = effects / effects.sum(1, keepdim=True).clamp_min(1e-12)
    strong = effects * step >= min_effect
    masked = torch.where(strong, purity, torch.zeros_like(purity))
    best_purity, best_direction = masked.max(0)
    controlled = best_purity >= threshold
    top = effects.topk(min(2, effects.shape[0]), dim=0).values
    second = top[1] if top.shape[0] > 1 else torch.zeros_like(top[0])
    gap = torch.where(top[0] > 0, (top[0] - second) / top[0].clamp_min(1e-12), torch.zeros_like(top[0]))
    active = strong.any(1)
    focus = float(purity.max(1).values[active].mean()) if active.any() else 0.0
    return {
        "coverage": int(controlled.sum()),
        "num_factors": int(effects.shape[1]),
        "purity": float(best_purity.mean()),
        "gap": float(gap.mean()),
        "focus": focus,
        "best_direction": [int(k) if c else None for k, c in zip(best_direction, controlled)],
        "per_factor_purity": [float(p) for p in best_purity],
        "per_factor_gap": [float(g) for g in gap],
        "dominant_factor": [int(f) for f in effects.argmax(1)],
    }
