"""StyleCLIP's global directions, Patashnik, Wu, Shechtman, Cohen-Or & Lischinski, "StyleCLIP:
Text-Driven Manipulation of StyleGAN Imagery", ICCV 2021: a direction in S space for a
neutral / target text pair, through a CLIP (``clip=``: the world CLIP by default, or your
open_clip weights with ``clip.path= clip.arch=``).

    ds = (r / max|r|) * sigma,  r_c = di_c . dt  (0 where |r_c| < beta),  edit: s + alpha * ds

with di_c each channel's unit change of the CLIP image embedding under a +-step sigma_c probe,
averaged over ``images`` styles, and dt the unit difference of the target's and the neutral
text's embeddings (``editing/styleclip.py``). The channel relevance is computed once per
generator, CLIP and probe settings and cached in ``cache_dir``; a later run with other texts
reads it back and solves in milliseconds (one batch, nothing rendered).

A fit-free method: the relevance sums accumulate over batches of the stream's styles (summed
over processes); ``solve`` turns them into one direction per target text.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch

from clip_models.base import ClipModel, check_words
from common.errors import UserError
from directions import BasisDirections
from editing.styleclip import (
    ProbeSettings,
    accumulate_relevance,
    global_direction,
    load_relevance,
    probe_styles,
    probed_channels,
    relevance_cache_key,
    relevance_cache_path,
    save_relevance,
    style_statistics,
    text_direction,
)
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod, Stats

log = logging.getLogger(__name__)


class StyleClipGlobal(FitFreeMethod):
    """Global directions from text.

    Args:
        clip: the CLIP (``clip_models.load_clip``; the ``clip`` config group).
        target: one text or a list of texts: a direction each.
        neutral: the text of the unedited image.
        beta: the disentanglement threshold on |r_c| (channels below it stay still).
        templates: patterns the texts are put in and averaged over (``"{}"`` the text itself).
        images, step, std_samples, torgb, probe_seed: the probe (``editing.styleclip.ProbeSettings``).
        render_batch: renders a forward pass of the probe.
        cache_dir: where the relevance statistics are cached (null: not cached).
        alpha_range: |alpha| of grids and the evaluation (alpha = 1: the strongest channel moved
            by one standard deviation).
    """

    method_name = "styleclip_global"
    value_name = "largest channel relevance |di_c . dt|"

    def __init__(self, clip: ClipModel, target: str | Sequence[str] = "a large shape",
                 neutral: str = "a shape", beta: float = 0.1, templates: Sequence[str] = ("{}",),
                 images: int = 64, step: float = 5.0, std_samples: int = 10_000, torgb: bool = False,
                 probe_seed: int = 0, render_batch: int = 256, cache_dir: str | None = None,
                 alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=images, alpha_range=alpha_range)
        if not isinstance(clip, ClipModel):
            raise UserError("method.clip must be a CLIP (the clip config group: clip.path=, clip.arch=)")
        self.clip = clip
        self.targets = [target] if isinstance(target, str) else [str(t) for t in target]
        self.neutral, self.beta, self.templates = str(neutral), float(beta), [str(t) for t in templates]
        self.settings = ProbeSettings(int(images), float(step), int(std_samples), bool(torgb), int(probe_seed))
        self.render_batch, self.cache_dir = int(render_batch), cache_dir
        self.cached: dict | None = None
        self.channels: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._first = 0

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), targets=self.targets, neutral=self.neutral, beta=self.beta,
                    templates=self.templates, probe=self.settings.__dict__,
                    clip=self.clip.identity(), cached=self.cached is not None)

    def check(self, generator: Generator) -> None:
        if generator.space != "s":
            raise UserError("styleclip_global edits S space: run it with generator.space=s "
                            f"(the generator is in {generator.space!r})")
        if not self.targets or not all(t.strip() for t in self.targets):
            raise UserError("method.target: give the text of the edit, such as 'a large shape'")
        if not 0 <= self.beta < 1:
            raise UserError(f"method.beta={self.beta}: the threshold is a cosine in [0, 1)")
        if not self.templates or not all("{}" in t for t in self.templates):
            raise UserError(f"method.templates={self.templates}: each needs a {{}} for the text")
        s = self.settings
        if s.images < 1 or s.std_samples < 2 or s.step <= 0 or self.render_batch < 1:
            raise UserError("method.images >= 1, method.std_samples >= 2, method.step > 0 and "
                            "method.render_batch >= 1 are needed")
        check_words(self.clip, [self.neutral, *self.targets])
        self.channels = probed_channels(generator, s.torgb)
        if self.cache_dir:
            key = relevance_cache_key(generator, self.clip, s)
            self.cached = load_relevance(relevance_cache_path(self.cache_dir, generator, self.clip, s),
                                         key, generator.latent_dim)
        if self.cached is not None:  # solve from the cache: one batch, nothing rendered
            self.samples = 0
            log.info("styleclip_global: channel relevance read from the cache (computed in %.0f s)",
                     self.cached["seconds"])

    def init_stats(self, generator: Generator) -> Stats:
        self.clip.to(generator.device)
        if self.cached is not None:
            return {}
        _, self.std = style_statistics(generator, self.settings.std_samples, self.settings.seed)
        return {"sum": torch.zeros(len(self.channels), self.clip.embed_dim, dtype=torch.float64),
                "seconds": torch.zeros((), dtype=torch.float64)}

    def step(self, module, batch: dict) -> bool:
        # The probe images are drawn from probe_seed, image by image (``probe_styles``), not
        # taken from the stream: the cached statistics then depend on the probe settings only,
        # not on data.batch_size or the number of processes. This batch's first image:
        self._first = self.seen + module.global_rank * batch["latent"].shape[0]
        return super().step(module, batch)

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        started = time.perf_counter()
        styles, classes = probe_styles(generator, self.settings.seed, self._first, batch["latent"].shape[0])
        stats["sum"] += accumulate_relevance(generator, self.clip, styles, classes,
                                             self.channels, self.std, self.settings.step,
                                             self.render_batch)
        stats["seconds"] += time.perf_counter() - started

    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        if self.cached is not None:
            relevance, std, channels = self.cached["relevance"], self.cached["std"], self.cached["channels"]
            seconds = self.cached["seconds"]
        else:
            relevance, std, channels = stats["sum"].cpu().float(), self.std, self.channels
            seconds = float(stats["seconds"])
            rank = self._trainer.global_rank if self._trainer is not None else 0
            if self.cache_dir and rank == 0:
                path = relevance_cache_path(self.cache_dir, generator, self.clip, self.settings)
                save_relevance(path, relevance, std, channels,
                               relevance_cache_key(generator, self.clip, self.settings), seconds)
                log.info("styleclip_global: channel relevance cached in %s", path)
        started = time.perf_counter()
        rows, values, metrics = [], [], {"relevance_seconds": seconds, "probed_channels": len(channels)}
        for i, target in enumerate(self.targets):
            dt = text_direction(self.clip, target, self.neutral, self.templates)
            ds, kept = global_direction(relevance, std, channels, dt, self.beta, generator.latent_dim)
            rows.append(ds)
            values.append(kept["largest_relevance"])
            metrics[f"{i}/channels"] = kept["channels"]
            metrics[f"{i}/largest_relevance"] = kept["largest_relevance"]
            log.info("styleclip_global: %r (from %r): %d channels at beta=%.3f, strongest %s",
                     target, self.neutral, kept["channels"], self.beta, kept["top_channels"])
        metrics["solve_ms"] = 1000 * (time.perf_counter() - started)
        basis = torch.stack(rows)
        return (BasisDirections.of(basis, scales=basis.norm(dim=1), values=torch.tensor(values)),
                metrics)
