"""The Generator interface every method talks to (see the architecture section of README.md).

A generator is a frozen ``nn.Module``: eval mode, no gradient on its own parameters, fixed noise,
so the same latent always gives the same image. A method only ever sees this interface:

- ``latent_dim``, ``resolution``, ``space`` (``"z"``, ``"w"``, ``"w+"`` or ``"s"``),
  ``num_layers``, ``layer_groups()`` (coarse / middle / fine) and ``num_classes`` (None, or a
  class count);
- ``sample(n, generator=..., y=None)``: latents in the editing space (``N x d``, or
  ``N x L x d`` in W+); ``sample_classes(n, generator=...)``: classes where there are any;
- ``forward(latent, y=None)``: images ``N x 3 x H x W`` in [-1, 1] (latents ``N x d`` are
  broadcast to every layer where per-layer codes exist);
- ``identity()``: everything a checkpoint, a directions file and the evaluation cache must
  match (weights hash, adapter, space, truncation, layers, classes);
- optional hooks: ``projection_weight(layers)`` (SeFa), ``features(latent, layer)`` (GANSpace on
  activations), ``discriminator`` (EYE, realism).

A style-based generator (one with a mapping network) implements ``mapping(z, y)``,
``synthesis(ws)``, ``w_dim``, ``w_avg`` and ``layer_resolutions()``; this base then provides the
three spaces and truncation (``w_avg + psi (w - w_avg)`` on the layers before ``cutoff``). One
that also implements ``style_layers()``, ``styles(ws)`` and ``synthesis_styles(styles)`` offers S
space (StyleSpace, Wu et al., CVPR 2021): a latent is every modulated layer's styles
``s = A(w)`` concatenated, ToRGB layers included (``N x D``); a layer spec then counts style
layers, and ``style_slices()`` says where each lies in the latent.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from common.checks import integer, number
from common.errors import UserError
from common.io import file_sha256  # noqa: F401  (re-exported: generators.base.file_sha256)

SPACES = ("z", "w", "w+", "s")


class StyleLayer(NamedTuple):
    """One layer of S space (Wu et al., StyleSpace, CVPR 2021): a modulated convolution whose
    ``channels`` input channels are scaled by the styles ``s = A(w)`` of per-layer code ``code``.

    Attributes:
        name: ``conv<i>`` or ``torgb<i>`` (i: the layer's index in S).
        kind: ``conv`` (a demodulated convolution) or ``torgb`` (a ToRGB layer).
        resolution: the side of the feature map it modulates.
        channels: its width in S.
        code: the per-layer (W+) code its affine reads.
    """

    name: str
    kind: str
    resolution: int
    channels: int
    code: int
# What generator.truncation_psi may be (the explorer's slider spans the same range): 1 is no
# truncation, 0 the mean w, -1 w mirrored through the mean, 2 twice as far from it.
TRUNCATION_PSI_RANGE = (-1.0, 2.0)


def check_truncation(truncation_psi: Any, truncation_cutoff: Any,
                     num_layers: int | None = None) -> tuple[float, int | None]:
    """``generator.truncation_psi`` a finite number in ``TRUNCATION_PSI_RANGE`` and
    ``generator.truncation_cutoff`` null or a layer count in 1..``num_layers``: a ValueError
    naming the option otherwise (checked before any weights are read, and again by
    ``Generator.set_view`` once the layers are known)."""
    low, high = TRUNCATION_PSI_RANGE
    psi = number(truncation_psi, "generator.truncation_psi", low=low, high=high,
                 hint="1 is no truncation; 0.5 to 0.7 trade variety for typical images")
    cutoff = integer(truncation_cutoff, "generator.truncation_cutoff", low=1, high=num_layers,
                     none=True, hint="the number of layers (from the first) that psi applies to; "
                     "null: all of them")
    return psi, cutoff


class Generator(nn.Module):
    """Base class of frozen generators.

    Attributes:
        name: a short identifier recorded in checkpoints and directions files.
        adapter: the architecture / file format that built it (``dcgan``, ``stylegan2``, ...).
        resolution: side of the square output images in pixels.
        z_dim: size of the prior's samples.
        space: the editing space.
        num_layers: number of per-layer codes (1 for a generator without them).
        num_classes: number of classes of a conditional generator, else ``None``.
        bounded_output: whether the images stay inside [-1, 1] (a tanh); False where the
            published network is only roughly in range (StyleGAN2): the start-up check
            (``generators.check``) then tests the range less strictly.
        sha256: hash of the weights the generator was built from (file or state).
        source: how to rebuild it (the generator config: ``_target_``, path, space, truncation).
    """

    name: str = "generator"
    adapter: str = "generator"
    resolution: int
    z_dim: int
    num_layers: int = 1
    num_classes: int | None = None
    bounded_output: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.sha256: str | None = None
        self.source: dict[str, Any] | None = None
        self.discriminator: nn.Module | None = None
        # The regressor whose factors the evaluation reads on this generator's images
        # ({"path": ..., "factors": ...}), named by its config; None: factor metrics are skipped.
        self.regressor_spec: dict[str, Any] | None = None
        self.space, self.truncation_psi, self.truncation_cutoff = "z", 1.0, None
        self._style_widths: list[int] | None = None

    def _apply(self, fn, recurse: bool = True):
        # The discriminator stays out of the module tree (no part of the generator's state, and
        # never trained with it) but goes where the generator goes: .to(device), .cuda(), .double().
        super()._apply(fn, recurse)
        if self.discriminator is not None:
            self.discriminator._apply(fn, recurse)
        return self

    # ---- the view: space and truncation --------------------------------------------------
    @property
    def style_based(self) -> bool:
        return hasattr(self, "mapping")

    def set_view(self, space: str = "z", truncation_psi: float = 1.0,
                 truncation_cutoff: int | None = None) -> "Generator":
        """Choose the editing space and truncation (both part of the generator's identity;
        ``check_truncation`` says what they may be)."""
        truncation_psi, truncation_cutoff = check_truncation(truncation_psi, truncation_cutoff,
                                                             self.num_layers)
        allowed = [sp for sp in SPACES if sp == "z" or (self.style_based and (sp != "s" or self.has_styles))]
        if space not in allowed:
            why = (" (W, W+ and S need a style-based generator)" if not self.style_based else
                   " (S needs the per-channel styles of a StyleGAN2 or StyleGAN3)" if space == "s" else "")
            raise UserError(f"{self.name} has no {space!r} space: choose generator.space from "
                             f"{allowed}{why}")
        if truncation_psi != 1 and not self.style_based:
            raise UserError(f"{self.name} has no mapping network: truncation needs a style-based "
                             "generator (leave generator.truncation_psi at 1)")
        if truncation_cutoff is not None and space == "w" and truncation_cutoff < self.num_layers:
            raise UserError("a truncation cutoff gives different codes per layer: use "
                             "space w+ (or z) with truncation_cutoff, or drop the cutoff")
        # S's layer widths, read once (a layout S cannot describe is refused here): every
        # forward checks and splits its latents by them
        self._style_widths = [layer.channels for layer in self.style_layers()] if space == "s" else None
        self.space, self.truncation_psi = space, truncation_psi
        self.truncation_cutoff = truncation_cutoff
        return self

    @property
    def has_styles(self) -> bool:
        """Whether the generator offers S space (``style_layers``, ``styles``, ``synthesis_styles``)."""
        return callable(getattr(self, "style_layers", None))

    @property
    def latent_dim(self) -> int:
        """Size of one latent code in the editing space (one layer's code in W+; every style
        layer's channels together in S)."""
        if self.space == "s":
            return sum(self._style_widths)
        return self.z_dim if self.space == "z" else self.w_dim

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.num_layers, self.latent_dim) if self.space == "w+" else (self.latent_dim,)

    # ---- layers --------------------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[int]]:
        """Named groups of the view's layers (per-layer codes; S's style layers in S): coarse
        (up to 8 px), middle (16-32 px) and fine (64 px and up), as in the StyleGAN paper;
        ``all`` for every layer."""
        res = self.view_layer_resolutions()
        if len(res) == 1:
            return {"all": [0]}
        return {"coarse": [i for i, r in enumerate(res) if r <= 8],
                "middle": [i for i, r in enumerate(res) if 16 <= r <= 32],
                "fine": [i for i, r in enumerate(res) if r >= 64],
                "all": list(range(len(res)))}

    def layer_resolutions(self) -> list[int]:
        return [self.resolution] * self.num_layers

    def view_layer_resolutions(self) -> list[int]:
        """The resolution of each layer a layer spec counts: the style layers in S, the
        per-layer codes otherwise."""
        if self.space == "s":
            return [layer.resolution for layer in self.style_layers()]
        return self.layer_resolutions()

    @property
    def view_num_layers(self) -> int:
        """How many layers a layer spec counts in this view (style layers in S)."""
        return len(self.view_layer_resolutions())

    def style_slices(self) -> list[slice]:
        """Where each style layer's channels lie in an S latent."""
        slices, start = [], 0
        for layer in self.style_layers():
            slices.append(slice(start, start + layer.channels))
            start += layer.channels
        return slices

    def style_channels(self, layers: Sequence[int]) -> list[int]:
        """The coordinates of an S latent that style layers ``layers`` own, in order."""
        slices = self.style_slices()
        return [c for i in layers for c in range(slices[i].start, slices[i].stop)]

    def split_styles(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """An S latent ``N x D`` as the styles of each layer (views, ``N x channels`` each)."""
        return list(latent.split(self._style_widths, dim=1))

    def layers(self, spec: Any = None) -> list[int]:
        """Layer indices from a spec: None / "all", a group name, ``"a-b"`` (inclusive), an
        int, or a list of ints."""
        groups = self.layer_groups()
        if spec is None:
            return groups["all"]
        if isinstance(spec, str):
            if spec in groups:
                if not groups[spec]:
                    raise UserError(f"{self.name} has no {spec!r} layers at {self.resolution} px: "
                                     f"groups {({k: v for k, v in groups.items() if v})}")
                return groups[spec]
            try:
                a, _, b = spec.partition("-")
                indices = list(range(int(a), int(b or a) + 1))
            except ValueError:
                raise UserError(f"unknown layer spec {spec!r}: use all, a group "
                                 f"({', '.join(groups)}), a range such as 0-3, or a list") from None
        elif isinstance(spec, int):
            indices = [spec]
        else:
            indices = [int(i) for i in spec]
        count = self.view_num_layers
        bad = [i for i in indices if not 0 <= i < count]
        if bad or not indices:
            where = " in S (style layers)" if self.space == "s" else ""
            raise UserError(f"layers {spec!r}: {self.name} has layers 0..{count - 1}{where}")
        return sorted(set(indices))

    # ---- sampling ------------------------------------------------------------------------
    def sample_classes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``n`` class indices uniformly drawn (None for an unconditional generator)."""
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), generator=generator).to(self.device)

    def draw(self, n: int, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(latents, classes)``: classes first (None if unconditional), then latents given them."""
        y = self.sample_classes(n, generator)
        return self.sample(n, generator, y=y), y

    def sample(self, n: int, generator: torch.Generator | None = None,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """Latents in the editing space: ``N x d`` (``N x L x d`` in W+), on the device.
        In W, W+ and S they are mapped (with classes ``y``, drawn if not given) and truncated;
        in S the styles of every layer are then concatenated."""
        z = torch.randn(n, self.z_dim, generator=generator).to(self.device)
        if self.space == "z":
            return z
        if self.num_classes and y is None:
            y = self.sample_classes(n, generator)
        with torch.no_grad():
            ws = self.truncate(self.mapping(z, y)[:, None].expand(-1, self.num_layers, -1))
            if self.space == "s":
                return torch.cat(self.styles(ws), dim=1)
        return ws[:, 0].contiguous() if self.space == "w" else ws.contiguous()

    def truncate(self, ws: torch.Tensor) -> torch.Tensor:
        """Truncation of per-layer codes toward ``w_avg`` on the layers before the cutoff."""
        if self.truncation_psi == 1:
            return ws
        cutoff = self.truncation_cutoff or self.num_layers
        moved = self.w_avg + self.truncation_psi * (ws[:, :cutoff] - self.w_avg)
        return torch.cat([moved, ws[:, cutoff:]], dim=1)

    def to_layers(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-layer codes ``N x L x w_dim`` for the synthesis, from editing-space latents."""
        self.check_latent(latent)
        if self.space == "s":
            raise UserError("S latents are styles, not per-layer codes: the generator renders them "
                            "with synthesis_styles")
        if self.space == "z":
            ws = self.mapping(latent, y)[:, None].expand(-1, self.num_layers, -1)
            return self.truncate(ws)
        return latent[:, None].expand(-1, self.num_layers, -1) if latent.ndim == 2 else latent

    def check_latent(self, latent: torch.Tensor) -> None:
        d = self.latent_dim
        ok = latent.ndim == 2 and latent.shape[1] == d
        if self.space == "w+":
            ok = ok or (latent.ndim == 3 and tuple(latent.shape[1:]) == (self.num_layers, d))
        if not ok:
            shapes = f"N x {d}" + (f" or N x {self.num_layers} x {d}" if self.space == "w+" else "")
            raise UserError(f"{self.name} ({self.space} space) takes latents {shapes}, "
                             f"got {tuple(latent.shape)}")

    def check_classes(self, y: torch.Tensor | None, n: int) -> None:
        if self.num_classes and self.space == "z" and y is None:
            raise UserError(f"{self.name} is conditional ({self.num_classes} classes): pass y")
        if not self.num_classes and y is not None:
            raise UserError(f"{self.name} is unconditional: it takes no classes y")
        if y is not None and (y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise UserError(f"y must hold {n} class indices in 0..{self.num_classes - 1}")

    # ---- the interface -------------------------------------------------------------------
    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """Images ``N x 3 x H x W`` in [-1, 1]."""
        raise NotImplementedError

    def projection_weight(self, layers: Any = None) -> torch.Tensor:
        """The weight that first reads the latent (SeFa); optional."""
        raise NotImplementedError(f"{type(self).__name__} does not expose a projection weight")

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        """Activations of an intermediate layer (GANSpace); optional."""
        raise NotImplementedError(f"{type(self).__name__} does not expose intermediate features")

    # ---- frozen-ness ---------------------------------------------------------------------
    def freeze(self) -> "Generator":
        """Eval mode and no gradients on the weights, for good (``train()`` keeps eval mode)."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        self._frozen = True
        return self

    def train(self, mode: bool = True) -> "Generator":
        # Lightning calls .train() on the whole LightningModule at the start of fit; a frozen
        # generator must stay in eval mode (batch-norm statistics, fixed noise) regardless.
        return super().train(False if getattr(self, "_frozen", False) else mode)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def identity(self) -> dict[str, Any]:
        """What a checkpoint, a directions file and the evaluation cache record instead of the
        weights: two generators with equal identities draw the same images from the same
        latents. The Z- and W-space views of one checkpoint differ here."""
        return {
            "name": self.name,
            "adapter": self.adapter,
            "sha256": self.sha256,
            "space": self.space,
            "latent_dim": self.latent_dim,
            "resolution": self.resolution,
            "num_layers": self.num_layers,
            "truncation": {"psi": self.truncation_psi, "cutoff": self.truncation_cutoff},
            "num_classes": self.num_classes,
        }


IDENTITY_KEYS = ("sha256", "adapter", "space", "latent_dim", "num_layers", "truncation", "num_classes")
# Recorded only by the generators that have them (BigGAN: the classes it samples; the adapter of
# your own module: its class, output range and, where set, the shape its network reads latents
# in), compared where a record holds them.
OPTIONAL_IDENTITY_KEYS = ("classes", "target", "output_range", "input_shape")


def identity_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
    """The identity fields that differ (fields a saved identity lacks are not compared, so
    records written before a field existed still match)."""
    return {k: (saved[k], current.get(k)) for k in IDENTITY_KEYS + OPTIONAL_IDENTITY_KEYS
            if k in saved and saved[k] is not None and saved[k] != current.get(k)}


def describe_layers(layers: Sequence[int] | None, num_layers: int) -> str:
    if layers is None or list(layers) == list(range(num_layers)):
        return "all layers"
    return "layers " + ",".join(map(str, layers))
