"""What the explorer shows, without the web: one generator, the directions files made for it,
and the images of a seed under several edits at once.

The generator is rebuilt the way ``edit.py`` rebuilds it (``generators.recorded.load_run_generator``:
the run's config.yaml beside the first file, else the build config the file records), and
every file must be made for it (``Directions.check_generator``). Renders hold one lock (torch
modules are not safe to run from racing threads) and run under ``torch.no_grad``.
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from clip_models.base import check_words
from common.errors import UserError
from directions import Directions
from evaluation.run import name_label, report_describes
from generators.recorded import load_run_generator

log = logging.getLogger("explore")




@dataclass
class DirectionsFile:
    """One directions file as the page shows it: a slider a direction, each labelled."""

    directions: Directions
    path: Path
    alpha_range: float  # the sliders span -alpha_range..alpha_range
    labels: list[str]

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def direction_labels(path: Path, count: int) -> list[str]:
    """A label a direction: the factor it moves most and its purity (the share of its effect
    that goes to that factor), read from the evaluation.json beside ``path`` when it scored
    this file; ``direction k`` otherwise."""
    labels = [f"direction {k}" for k in range(count)]
    report_path = path.parent / "evaluation.json"
    if not report_path.is_file():
        return labels
    try:
        report = json.loads(report_path.read_text())
        if Path(str(report.get("directions", path.name))).name != path.name:
            return labels  # the report of another file in the same folder
        if not report_describes(report, path):
            log.warning("%s describes an earlier %s (the file changed since it was evaluated); "
                        "directions are unlabelled: run evaluate.py again", report_path, path.name)
            return labels
        result = report["results"][report["label"]]
        if "effect_matrix" not in result:  # evaluated without a regressor: the CLIP's names
            return named_labels(report.get("names"), labels)
        effects = torch.tensor(result["effect_matrix"], dtype=torch.float64)
        factors = list(result["factors"])
        if effects.shape != (count, len(factors)):
            log.warning("%s: its effect matrix is %s, not %d directions x %d factors; "
                        "directions are unlabelled", report_path, tuple(effects.shape), count,
                        len(factors))
            return labels
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        # RuntimeError: torch.tensor of nulls, and RecursionError (deeply nested JSON)
        log.warning("%s is unreadable (%s); directions are unlabelled",
                    report_path, " ".join(str(err).split())[:200])
        return labels
    # purity P[k, f] = E[k, f] / sum_f' E[k, f'] (metrics/effects.py)
    purity = effects / effects.sum(1, keepdim=True).clamp_min(1e-12)
    top = effects.argmax(1).tolist()
    # a row with NaN or inf (a failed or edited evaluation) gets no label, never "purity nan"
    known = torch.isfinite(effects).all(1) & torch.isfinite(purity).all(1)
    return [f"direction {k}: {factors[f]}, purity {purity[k, f]:.2f}" if known[k] else labels[k]
            for k, f in enumerate(top)]


def named_labels(names: Any, labels: list[str]) -> list[str]:
    """Labels from the CLIP's names of an evaluation (metrics/naming.py), where they fit."""
    entries = names.get("directions") if isinstance(names, dict) else None
    if not isinstance(entries, list) or len(entries) != len(labels):
        return labels
    out = []
    for k, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str)
              and entry.get("sign") in (1, -1))
        out.append(f"direction {k}: {name_label(entry)}" if ok else labels[k])
    return out


class Explorer:
    """The renderer behind the page.

    Args:
        generator: the frozen generator every file was made for.
        files: the directions files, in the order given (the page refers to them by index).
    """

    def __init__(self, generator, files: Sequence[DirectionsFile]) -> None:
        self.generator = generator
        self.files = list(files)
        self.lock = threading.Lock()
        # The text box (StyleCLIP's global directions, editing/styleclip.py): set by
        # ``enable_text``; each typed prompt adds an S vector ``ds`` (edit: s + alpha ds).
        self.text = None
        self.text_settings: dict = {}
        self.text_reason = "the text box is off (text.enabled=false)"
        self.text_sliders: list[dict] = []

    def enable_text(self, directions, neutral: str, beta: float, alpha_range: float) -> None:
        """Turn the text box on with a ``GlobalDirections`` of this generator."""
        self.text, self.text_reason = directions, None
        self.text_settings = {"neutral": neutral, "beta": beta, "alpha_range": alpha_range}

    def add_text(self, prompt: str, neutral: str | None = None) -> dict:
        """A slider for ``prompt`` (from ``neutral``, the configured one by default): its index,
        label and the channels it moves. A ``UserError`` says why a prompt gives none."""
        if self.text is None:
            raise UserError(self.text_reason)
        neutral = neutral or self.text_settings["neutral"]
        with self.lock:
            check_words(self.text.clip, [prompt, neutral])
            ds, kept = self.text.direction(prompt, neutral, self.text_settings["beta"])
            self.text_sliders.append({"prompt": prompt, "neutral": neutral,
                                      "ds": ds.to(self.generator.device)})
        return {"index": len(self.text_sliders) - 1, "label": f"{prompt} (from {neutral})",
                "channels": kept["channels"], "alpha_range": self.text_settings["alpha_range"]}

    @classmethod
    def open(cls, paths: Sequence[str | Path], generator_cfg, from_run: bool = True,
             default_alpha_range: float | None = None, device: str | None = "cpu",
             trusted_modules: Sequence[str] | None = None) -> "Explorer":
        """Load ``paths`` and the generator the first one records; every file must be made
        for that generator. Any mistake is a ``UserError`` naming the file."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise UserError("directions=[] names no file: pass directions=<run>/directions.pt "
                                    "or a list directions=[a.pt,b.pt]")
        generator, files = None, []
        for path in paths:
            try:
                directions = Directions.load(path)
                if generator is None:
                    generator = load_run_generator(path, generator_cfg, from_run,
                                                   recorded=directions.meta.get("generator_source"),
                                                   device=device, trusted_modules=trusted_modules)
                # the generator comes from the first file; the others must match it
                where = str(path) if path == paths[0] else \
                    f"{path} (shown with the generator of {paths[0]})"
                directions.check_generator(generator, source=where)
                alpha_range, _ = directions.alpha_range(default=default_alpha_range)
            except UserError as err:
                hint = " (or pass default_alpha_range=...)" if "alpha_range" in str(err) else ""
                raise UserError(f"{err}{hint}") from err
            files.append(DirectionsFile(directions.to(generator.device), path, alpha_range,
                                        direction_labels(path, directions.num_directions)))
        return cls(generator, files)

    # ---- what the page needs to know ------------------------------------------------------
    @property
    def style_based(self) -> bool:
        return bool(getattr(self.generator, "style_based", False))

    def info(self) -> dict:
        g = self.generator
        groups = {k: v for k, v in g.layer_groups().items() if v} if self.style_based else {}
        return {
            "generator": {"name": g.name, "space": g.space, "resolution": g.resolution,
                          "num_layers": g.view_num_layers, "style_based": self.style_based,
                          "layer_groups": groups, "conditional": bool(g.num_classes),
                          "truncation_psi": g.truncation_psi if self.style_based else None,
                          "input_transform": self.transformable},
            "text": {"enabled": self.text is not None, "reason": self.text_reason,
                     "neutral": self.text_settings.get("neutral"),
                     "alpha_range": self.text_settings.get("alpha_range"),
                     "sliders": [{"index": i, "label": f"{t['prompt']} (from {t['neutral']})"}
                                 for i, t in enumerate(self.text_sliders)]},
            "files": [{"index": i, "name": f.name, "method": f.directions.meta.get("method"),
                       "num_directions": f.directions.num_directions,
                       "alpha_range": f.alpha_range, "labels": f.labels,
                       "layers": f.directions.layers} for i, f in enumerate(self.files)],
        }

    # ---- rendering ------------------------------------------------------------------------
    @contextmanager
    def _truncation(self, psi: float | None):
        """The generator's truncation psi set to ``psi`` for one render (under the lock)."""
        kept = self.generator.truncation_psi
        self.generator.truncation_psi = kept if psi is None else float(psi)
        try:
            yield
        finally:
            self.generator.truncation_psi = kept

    @property
    def transformable(self) -> bool:
        """Whether the generator has an input transform (StyleGAN3)."""
        return callable(getattr(self.generator, "input_transform", None))

    def _input_transform(self, transform: tuple[float, float, float] | None):
        """The generator's input transform set for one render (under the lock)."""
        if transform is None:
            return nullcontext()
        return self.generator.input_transform(transform[:2], transform[2])

    @contextmanager
    def styles_view(self):
        """The generator in S for a while (the text box's directions live there), then back in
        the files' view, truncation unchanged."""
        g = self.generator
        kept = (g.space, g.truncation_psi, g.truncation_cutoff)
        g.set_view("s", g.truncation_psi, g.truncation_cutoff)
        try:
            yield g
        finally:
            g.set_view(*kept)

    def _synthesise(self, latent, edited, y, layers: tuple[int, int] | None,
                    styles_delta: torch.Tensor | None = None) -> torch.Tensor:
        """Images of ``edited``; with ``layers`` (a, b), the edited per-layer codes on layers
        a..b only and the unedited codes elsewhere (style mixing of the edit); in S the edited
        styles of style layers a..b. ``styles_delta``: the text box's edit, added to the styles
        of the (mixed) codes of a file in Z, W or W+, rendered from S."""
        g = self.generator
        whole = layers is None or (layers[0] == 0 and layers[1] == g.view_num_layers - 1)
        if g.space == "s":
            if whole:
                return g(edited, y)
            mask = torch.zeros(g.latent_dim, dtype=torch.bool, device=edited.device)
            mask[g.style_channels(range(layers[0], layers[1] + 1))] = True
            return g(torch.where(mask, edited, latent), y)
        if whole and styles_delta is None:
            return g(edited, y)
        if whole:
            codes = g.to_layers(edited, y)
        else:
            chosen = torch.zeros(g.num_layers, dtype=torch.bool, device=edited.device)
            chosen[layers[0]:layers[1] + 1] = True
            codes = torch.where(chosen[None, :, None], g.to_layers(edited, y), g.to_layers(latent, y))
        if styles_delta is None:
            return g.synthesis(codes)
        with self.styles_view():
            return g(torch.cat(g.styles(codes), dim=1) + styles_delta, y)

    @torch.no_grad()
    def render(self, file: int, seeds: Sequence[int], edits: Sequence[tuple[int, float]] = (),
               layers: tuple[int, int] | None = None, psi: float | None = None,
               strip: tuple[int, Sequence[float]] | None = None,
               wanted: Callable[[], bool] | None = None,
               transform: tuple[float, float, float] | None = None,
               text: Sequence[tuple[int, float]] = ()) -> torch.Tensor | None:
        """Images ``N x 3 x H x W`` (on the CPU) of ``seeds`` (drawn as edit.py draws them)
        under ``edits`` ((index, alpha) pairs, combined by ``Directions.apply``). With
        ``strip=(k, alphas)``: for each seed, direction k walked over ``alphas`` from the image
        with the other edits (``N * len(alphas)`` images, seed-major). ``wanted`` is asked once
        the lock is held: when it says no (a newer request replaced this one), nothing is
        rendered and None is returned. ``transform=(x, y, angle)``: a StyleGAN3's input
        transform for this render (translation in half-image units, rotation in degrees).
        ``text``: (index, alpha) pairs of the text box's sliders, added after the file's edits
        (to the styles of its latents: in S directly, from Z, W or W+ through their codes).
        Arguments are assumed valid (the app checks them)."""
        directions = self.files[file].directions
        with self.lock, self._truncation(psi), self._input_transform(transform):
            if wanted is not None and not wanted():
                return None
            draws = [self.generator.draw(1, torch.Generator().manual_seed(int(s))) for s in seeds]
            latent = torch.cat([z for z, _ in draws])
            y = torch.cat([c for _, c in draws]) if self.generator.num_classes else None
            if strip is not None:
                edits = [e for e in edits if e[0] != strip[0]]
            edited = directions.apply(latent, [(k, float(a)) for k, a in edits if a != 0], y=y)
            delta = None  # the text sliders' edit of the styles
            for k, a in text:
                step = float(a) * self.text_sliders[k]["ds"]
                delta = step if delta is None else delta + step
            if delta is not None and self.generator.space == "s":
                edited, delta = edited + delta, None
            if strip is not None:
                k, alphas = strip
                edited = directions.traverse(edited, k, alphas, y=y).flatten(0, 1)
                latent = latent.repeat_interleave(len(alphas), 0)
                y = None if y is None else y.repeat_interleave(len(alphas))
            return self._synthesise(latent, edited, y, layers, delta).cpu()
