"""StyleCLIP's global directions (Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN
Imagery", ICCV 2021, section 6), shared by ``method=styleclip_global`` and the explorer's text box.

In S space (``generator.space=s``), with a CLIP image encoder E_I and text encoder E_T:

1. Channel relevance, once per generator and CLIP: for every channel c of S, over images s,

       di_c = normalise( mean_s [ E_I(G(s + a sigma_c e_c)) - E_I(G(s - a sigma_c e_c)) ] )

   (E_I's embeddings unit length, a the probe step in the channel's standard deviations sigma_c).
2. A text pair's direction, in milliseconds:

       dt   = normalise( mean_templates E_T(target) - mean_templates E_T(neutral) )
       r_c  = di_c . dt,   r_c = 0 where |r_c| < beta,   ds = (r / max |r|) * sigma

   and the edit is s + alpha * ds. beta is the disentanglement threshold: a larger beta keeps
   fewer channels (a more local edit).

ToRGB layers are left out by default, as in the reference code's channel set. The relevance
statistics are cached in a ``.pt`` file per (generator identity, CLIP identity, probe settings),
read back with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from common.errors import UserError
from common.io import atomic_torch_save
from common.pickles import UnreadableFile, load_weights_only

CACHE_FORMAT = "latent-directions/styleclip-relevance/v1"


@dataclass(frozen=True)
class ProbeSettings:
    """How the channel relevance is measured.

    Args:
        images: styles the changes are averaged over.
        step: the probe's +- step, in each channel's standard deviations.
        std_samples: styles the channels' standard deviations are estimated from.
        torgb: whether ToRGB layers' channels are probed (and can be edited).
        seed: the draw of the probe images and of the std samples (the run's seed by default).
    """

    images: int = 64
    step: float = 5.0
    std_samples: int = 10_000
    torgb: bool = False
    seed: int = 0


def probed_channels(generator, torgb: bool) -> torch.Tensor:
    """The coordinates of S that are probed (every channel, or every but ToRGB layers')."""
    layers = [i for i, layer in enumerate(generator.style_layers()) if torgb or layer.kind != "torgb"]
    return torch.tensor(generator.style_channels(layers), dtype=torch.long)


@torch.no_grad()
def probe_styles(generator, seed: int, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Probe images ``first .. first + count - 1``: each drawn from its own seed (``seed``, index),
    so the set is the same whatever the batches and processes it is split over."""
    draws = [generator.draw(1, torch.Generator().manual_seed(seed * 1_000_003 + first + i))
             for i in range(count)]
    styles = torch.cat([d[0] for d in draws])
    classes = None if draws[0][1] is None else torch.cat([d[1] for d in draws])
    return styles, classes


@torch.no_grad()
def style_statistics(generator, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of every S channel over ``samples`` styles (mapping and affines only)."""
    rng = torch.Generator().manual_seed(seed)
    total, total2, n = 0.0, 0.0, 0
    for start in range(0, samples, 1000):
        styles = generator.draw(min(1000, samples - start), rng)[0].double().cpu()
        total, total2, n = total + styles.sum(0), total2 + styles.pow(2).sum(0), n + styles.shape[0]
    mean = total / n
    return mean.float(), (total2 / n - mean.pow(2)).clamp_min(0).sqrt().float()


@torch.no_grad()
def accumulate_relevance(generator, clip, styles: torch.Tensor, classes: torch.Tensor | None,
                         channels: torch.Tensor, std: torch.Tensor, step: float,
                         batch_size: int = 256, progress=None) -> torch.Tensor:
    """``sum over styles of E_I(G(s + step sigma_c e_c)) - E_I(G(s - step sigma_c e_c))`` for each
    probed channel c: ``C x embed_dim`` (float64). Renders in batches of ``batch_size``."""
    device = styles.device
    n, c = styles.shape[0], len(channels)
    out = torch.zeros(c, clip.embed_dim, dtype=torch.float64)
    # The (image, channel, sign) triples in one flat order, rendered batch by batch.
    per_channel = 2 * n
    total = c * per_channel
    for start in range(0, total, batch_size):
        flat = torch.arange(start, min(total, start + batch_size))
        ch, rest = flat // per_channel, flat % per_channel
        image, sign = rest // 2, 1.0 - 2.0 * (rest % 2)  # +step then -step
        latent = styles[image.to(device)].clone()
        coord = channels[ch].to(device)
        latent[torch.arange(len(flat), device=device), coord] += (
            sign.to(device) * step * std.to(device)[coord])
        y = None if classes is None else classes[image.to(device)]
        embeddings = clip.encode_image(generator(latent, y)).double().cpu()
        out.index_add_(0, ch, embeddings * sign[:, None].double())
        if progress is not None:
            progress(len(flat))
    return out


def relevance_cache_key(generator, clip, settings: ProbeSettings) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "generator": generator.identity(),
                       "clip": clip.identity(), "settings": asdict(settings)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def relevance_cache_path(cache_dir: str | Path, generator, clip, settings: ProbeSettings) -> Path:
    return Path(cache_dir) / f"relevance-{relevance_cache_key(generator, clip, settings)}.pt"


def save_relevance(path: Path, relevance: torch.Tensor, std: torch.Tensor, channels: torch.Tensor,
                   key: str, seconds: float) -> Path:
    return atomic_torch_save({"format": CACHE_FORMAT, "key": key, "relevance": relevance.float(),
                              "std": std.float(), "channels": channels.long(),
                              "seconds": float(seconds)}, path)


def load_relevance(path: Path, key: str, latent_dim: int) -> dict | None:
    """The cached statistics at ``path`` when they are this key's and well formed; else None
    (a damaged or foreign file is recomputed, never trusted)."""
    if not Path(path).is_file():
        return None
    try:
        blob = load_weights_only(path, "cpu", what="relevance cache")
    except (UnreadableFile, UserError):
        return None
    expected = {"format", "key", "relevance", "std", "channels", "seconds"}
    if not isinstance(blob, dict) or set(blob) != expected or blob["format"] != CACHE_FORMAT \
            or blob["key"] != key:
        return None
    relevance, std, channels = blob["relevance"], blob["std"], blob["channels"]
    if not all(isinstance(t, torch.Tensor) for t in (relevance, std, channels)) \
            or std.shape != (latent_dim,) or channels.ndim != 1 \
            or relevance.shape[0] != channels.shape[0] or channels.dtype != torch.long \
            or (len(channels) and (channels.min() < 0 or channels.max() >= latent_dim)):
        return None
    return blob


def text_direction(clip, target: str, neutral: str, templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """``dt``: the unit difference of the template-averaged text embeddings."""
    def embed(text: str) -> torch.Tensor:
        return F.normalize(clip.encode_text([t.format(text) for t in templates]).mean(0), dim=0)

    with torch.no_grad():
        delta = embed(target) - embed(neutral)
    if delta.norm() < 1e-6:
        raise UserError(f"the target {target!r} and the neutral {neutral!r} texts embed alike: "
                        "give a target that says what should change")
    return F.normalize(delta, dim=0).cpu()


def global_direction(relevance: torch.Tensor, std: torch.Tensor, channels: torch.Tensor,
                     dt: torch.Tensor, beta: float, latent_dim: int) -> tuple[torch.Tensor, dict]:
    """``ds`` (a ``latent_dim`` vector: the edit is s + alpha * ds) for text direction ``dt``,
    and what it kept: channel count, the largest relevance, the strongest channels."""
    unit = F.normalize(relevance.float(), dim=1)
    r = unit @ dt.float()
    largest = float(r.abs().max()) if len(r) else 0.0
    kept = r.abs() >= beta
    if not kept.any():
        raise UserError(f"no channel has a relevance of at least beta={beta} to this text (the "
                        f"largest is {largest:.3f}): lower method.beta, or rephrase the target")
    r = torch.where(kept, r, torch.zeros_like(r)) / r.abs().max()
    ds = torch.zeros(latent_dim)
    ds[channels] = r * std[channels]
    order = r.abs().argsort(descending=True)[: min(5, int(kept.sum()))]
    return ds, {"channels": int(kept.sum()), "largest_relevance": largest,
                "top_channels": [int(channels[i]) for i in order]}


class GlobalDirections:
    """The channel relevance of one generator in S and one CLIP, read from the cache or computed
    (and cached), and the direction of any text pair from it: the explorer's text box.

    Args:
        generator: the frozen generator, in S space.
        clip: the CLIP.
        settings: the probe.
        cache_dir: where the relevance is cached (None: computed every time).
        render_batch: renders a forward pass of the probe.
        progress: called with the number of renders done, while computing.
    """

    def __init__(self, generator, clip, settings: ProbeSettings = ProbeSettings(),
                 cache_dir: str | Path | None = None, render_batch: int = 256, progress=None) -> None:
        if generator.space != "s":
            raise UserError("global directions edit S space: the generator is in "
                            f"{generator.space!r} (use files made with generator.space=s)")
        self.generator, self.clip, self.settings = generator, clip.to(generator.device), settings
        key = relevance_cache_key(generator, clip, settings)
        path = relevance_cache_path(cache_dir, generator, clip, settings) if cache_dir else None
        cached = load_relevance(path, key, generator.latent_dim) if path is not None else None
        self.from_cache = cached is not None
        if cached is None:
            import time

            started = time.perf_counter()
            _, std = style_statistics(generator, settings.std_samples, settings.seed)
            channels = probed_channels(generator, settings.torgb)
            relevance = torch.zeros(len(channels), clip.embed_dim, dtype=torch.float64)
            for first in range(0, settings.images, 8):
                styles, classes = probe_styles(generator, settings.seed, first,
                                               min(8, settings.images - first))
                relevance += accumulate_relevance(generator, self.clip, styles, classes, channels,
                                                  std, settings.step, render_batch, progress)
            cached = {"relevance": relevance.float(), "std": std, "channels": channels,
                      "seconds": time.perf_counter() - started}
            if path is not None:
                save_relevance(path, cached["relevance"], std, channels, key, cached["seconds"])
        self.relevance, self.std = cached["relevance"], cached["std"]
        self.channels, self.seconds = cached["channels"], float(cached["seconds"])
        self.latent_dim = generator.latent_dim  # of S: the generator may go back to another view

    def direction(self, target: str, neutral: str, beta: float,
                  templates: Sequence[str] = ("{}",)) -> tuple[torch.Tensor, dict]:
        """``ds`` for a text pair (milliseconds) and what it kept (``global_direction``)."""
        dt = text_direction(self.clip, target, neutral, templates)
        return global_direction(self.relevance, self.std, self.channels, dt, beta, self.latent_dim)
