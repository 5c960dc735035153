"""StyleSpace's channels, Wu, Lischinski & Shechtman, "StyleSpace Analysis: Disentangled Controls
for StyleGAN Image Generation", CVPR 2021: the positive-example procedure.

In S space (``generator.space=s``) a single style channel often controls one attribute. Given
positive examples of an attribute, the channels that control it are those whose styles on the
positives sit far from their population mean, relative to how much they vary among the
positives themselves:

    relevance_u = |mean_pos(s_u) - mean(s_u)| / std_pos(s_u)

Here the positives are either the ``positives`` samples of the stream that score highest on a
factor of the generator's regressor (any scalar read: ``x``, ``shape=1``, ``hue.cos``), or a
handful of samples a person picked (``positive_seeds={smile: [3, 17, 42]}``: the seeds whose
images show the attribute, drawn as edit.py and the explorer draw a seed), which needs no
regressor. Each factor keeps its ``per_factor`` most
relevant channels, ranked; a direction is one channel's unit vector, signed toward the
positives, with alpha counted in that channel's population standard deviations (StyleSpace's
edit: s_u + alpha sigma_u).

The paper's other procedure, gradient maps (``procedure=gradient``), finds the channels that act
on a region of the image: for ``gradient_samples`` styles, the Jacobian of the (channel-averaged,
``jacobian_size``-px) image with respect to every channel, and each channel's share of its
gradient magnitude inside the region; the channels with the largest share, averaged over the
samples, are the region's. The paper takes the regions from a semantic segmentation network;
here the region is a box or a mask image, as LowRankGAN's (``method.region``).

Streaming: the population's per-channel sums (summed over processes) and, per factor, a
fixed-size buffer of the highest scores with their styles (merged over processes).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from common.checks import integers
from common.errors import UserError
from directions import BasisDirections
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod, Stats, keep_extremes, load_assessors, merged_extremes
from lightning_modules.fit_free.lowrankgan import image_jacobian, region_mask
from regressors.attributes import AttributeAssessor

log = logging.getLogger(__name__)
MAX_SEED = 2 ** 63 - 1  # what torch.Generator.manual_seed takes (edit.py's bound)


def channel_relevance(positives: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(relevance D, sign D)`` of each channel for positive styles ``P x D``, against the
    population's ``mean`` and ``std`` (the sign: where the positives lie from the mean)."""
    shift = positives.double().mean(0) - mean.double()
    spread = positives.double().std(0).clamp_min(1e-6 * float(std.double().mean().clamp_min(1e-12)))
    return (shift.abs() / spread).float(), torch.where(shift >= 0, 1.0, -1.0).float()


class StyleSpace(FitFreeMethod):
    """The channels of S that control each factor, from its positive examples.

    Args:
        factors: the attributes, each a scalar read of the regressor (see AttributeAssessor).
        per_factor: channels kept per factor (the most relevant first).
        positives: the samples with the highest score of a factor taken as its positives.
        positive_seeds: ``{attribute: [seeds]}``, user-labelled positives instead of a
            regressor's (``factors`` is then not used); two seeds at least an attribute.
        regressor: ``auto`` (the generator's) or a regressor file.
        procedure: ``positives`` (the default) or ``gradient`` (gradient maps over ``region``;
            ``per_factor`` channels are kept, factors and positives are not used).
        region, jacobian_size, gradient_samples, chunk_size: the gradient maps' region (a box
            ``[top, bottom, left, right]`` in fractions or a mask image), the grid side, the
            styles they are averaged over, the vmap chunk (None: all at once).
        samples: styles drawn (the population).
        alpha_range: |alpha| of grids and the evaluation, in population standard deviations.
    """

    method_name = "stylespace"
    value_name = "relevance (positives' mean shift / their std)"

    def __init__(self, factors: list[str] | str = ("x",), per_factor: int = 2, positives: int = 100,
                 positive_seeds: dict[str, list[int]] | None = None, regressor: str = "auto",
                 procedure: str = "positives", region: Any = (0.25, 0.75, 0.25, 0.75),
                 jacobian_size: int = 16, gradient_samples: int = 8, chunk_size: int | None = None,
                 samples: int = 10_000, alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=samples, alpha_range=alpha_range)
        self.procedure, self.region, self.jacobian_size = procedure, region, jacobian_size
        self.gradient_samples, self.chunk_size = gradient_samples, chunk_size
        self.mask: torch.Tensor | None = None
        if positive_seeds is not None and not hasattr(positive_seeds, "items"):
            raise UserError(f"method.positive_seeds must map an attribute to its seeds, such as "
                            f"{{smile: [3, 17, 42]}}; got {positive_seeds!r}")
        self.positive_seeds = {str(k): v if isinstance(v, (str, int, float)) or v is None else list(v)
                               for k, v in (positive_seeds or {}).items()}
        if self.positive_seeds:  # user-labelled attributes replace the regressor's factors
            factors = list(self.positive_seeds)
        self.factors = [factors] if isinstance(factors, str) else list(factors)
        self.per_factor, self.positives, self.regressor_choice = per_factor, positives, regressor
        self.assessors: list[AttributeAssessor] = []

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), factors=self.factors, per_factor=self.per_factor,
                    positives=self.positives, positive_seeds=self.positive_seeds or None,
                    regressor=self.regressor_choice, procedure=self.procedure,
                    region=self.region if isinstance(self.region, str) else list(self.region),
                    jacobian_size=self.jacobian_size, gradient_samples=self.gradient_samples)

    def check(self, generator: Generator) -> None:
        if generator.space != "s":
            raise UserError("stylespace ranks the channels of S space: run it with generator.space=s "
                            f"(the generator is in {generator.space!r})")
        if not self.factors:
            raise UserError("stylespace needs at least one factor: method.factors=[x]")
        if not 1 <= self.per_factor <= generator.latent_dim:
            raise UserError(f"per_factor={self.per_factor}: keep 1..{generator.latent_dim} channels a factor")
        if self.procedure not in ("positives", "gradient"):
            raise UserError(f"procedure={self.procedure!r}: use positives or gradient")
        if self.procedure == "gradient":
            self.mask = region_mask(self.region, generator.resolution, self.jacobian_size)
            if not 1 <= self.gradient_samples <= self.samples:
                raise UserError(f"gradient_samples={self.gradient_samples}: use 1..{self.samples} "
                                "(method.samples)")
            self.factors = ["region"]
            return
        if self.positive_seeds:
            for name, seeds in self.positive_seeds.items():
                integers(seeds, f"method.positive_seeds.{name}", low=0, high=MAX_SEED, single=False,
                         what="expected a list of at least two seeds (the samples showing the attribute)")
                if len(set(seeds)) < 2:
                    raise UserError(f"method.positive_seeds.{name}: give at least two different seeds")
            return
        if not 2 <= self.positives <= self.samples // 2:
            raise UserError(f"positives={self.positives}: take 2..{self.samples // 2} (half of "
                            f"method.samples={self.samples}) positive examples")
        self.assessors = load_assessors(generator, self.regressor_choice, "StyleSpace's positive examples",
                                        self.factors)

    def init_stats(self, generator: Generator) -> Stats:
        f, d, dev = len(self.factors), generator.latent_dim, generator.device
        for a in self.assessors:
            a.to(dev)
        if self.procedure == "gradient":
            return {"inside": torch.zeros(d, device=dev, dtype=torch.float64),
                    "maps": torch.zeros((), device=dev, dtype=torch.float64),
                    "sum": torch.zeros(d, device=dev, dtype=torch.float64),
                    "sum2": torch.zeros(d, device=dev, dtype=torch.float64),
                    "count": torch.zeros((), device=dev, dtype=torch.float64)}
        return {"top_scores": torch.full((f, self.positives), -float("inf"), device=dev),
                "top_latents": torch.zeros(f, self.positives, d, device=dev),
                "sum": torch.zeros(d, device=dev, dtype=torch.float64),
                "sum2": torch.zeros(d, device=dev, dtype=torch.float64),
                "count": torch.zeros((), device=dev, dtype=torch.float64)}

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        styles = batch["latent"]
        if self.procedure == "gradient":
            self.accumulate_maps(generator, batch, stats)
        elif not self.positive_seeds:  # the regressor's positives: the highest scores seen
            images = generator(styles, batch.get("y"))
            scores = torch.stack([a(images) for a in self.assessors])  # F x N
            stats["top_scores"], stats["top_latents"] = keep_extremes(
                stats["top_scores"], stats["top_latents"], scores,
                styles[None].expand(len(self.factors), -1, -1), largest=True)
        stats["sum"] += styles.double().sum(0)
        stats["sum2"] += styles.double().pow(2).sum(0)
        stats["count"] += styles.shape[0]

    def accumulate_maps(self, generator: Generator, batch: dict, stats: Stats) -> None:
        """Gradient maps of this batch's first styles until ``gradient_samples`` are summed (on
        this process): each channel's share of its |d image / d s_u| inside the region."""
        mask = self.mask.flatten().to(generator.device)
        classes = batch.get("y")
        for i, style in enumerate(batch["latent"]):
            if stats["maps"] >= self.gradient_samples:
                return
            with torch.enable_grad():
                jac = image_jacobian(generator, style, self.jacobian_size, self.chunk_size, "forward",
                                     None if classes is None else classes[i]).abs().double()  # pixels x D
            stats["inside"] += jac[mask].sum(0) / jac.sum(0).clamp_min(1e-30)
            stats["maps"] += 1

    def positive_styles(self, generator: Generator, stats: Stats, i: int) -> torch.Tensor:
        """The positives of factor ``i``: its labelled seeds' styles, or the buffer's."""
        if not self.positive_seeds:
            return stats["top_latents"][i].cpu()
        seeds = self.positive_seeds[self.factors[i]]
        return torch.cat([generator.draw(1, torch.Generator().manual_seed(int(s)))[0] for s in seeds]).cpu()

    def reduced_stats(self, strategy) -> Stats:
        if self.procedure == "gradient":  # sums only
            return super().reduced_stats(strategy)
        return merged_extremes(strategy, self.stats, (("top", True),))

    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        n = stats["count"].cpu()
        mean = (stats["sum"].cpu() / n)
        std = (stats["sum2"].cpu() / n - mean.pow(2)).clamp_min(0).sqrt()
        names = [layer.name for layer in generator.style_layers()]
        owner = torch.cat([torch.full((s.stop - s.start,), i) for i, s in enumerate(generator.style_slices())])
        rows, scales, values, metrics = [], [], [], {}
        for i, name in enumerate(self.factors):
            if self.procedure == "gradient":  # the share of each channel's gradient in the region
                relevance = (stats["inside"].cpu() / stats["maps"].cpu().clamp_min(1)).float()
                sign = torch.ones_like(relevance)
            else:
                relevance, sign = channel_relevance(self.positive_styles(generator, stats, i), mean, std)
            top = relevance.argsort(descending=True, stable=True)[: self.per_factor]
            for rank, u in enumerate(top.tolist()):
                rows.append(torch.zeros(generator.latent_dim).index_fill_(0, torch.tensor(u), float(sign[u])))
                scales.append(float(std[u]))
                values.append(float(relevance[u]))
                layer = int(owner[u])
                metrics[f"{name}/channel_{rank}"] = u
                metrics[f"{name}/relevance_{rank}"] = float(relevance[u])
                log.info("stylespace: %s: channel %d (%s, #%d), relevance %.2f", name, u, names[layer],
                         u - generator.style_slices()[layer].start, float(relevance[u]))
        directions = BasisDirections.of(torch.stack(rows), scales=torch.tensor(scales),
                                        values=torch.tensor(values))
        return directions, metrics
