"""BigGAN-deep (Brock et al., "Large Scale GAN Training for High Fidelity Natural Image
Synthesis", ICLR 2019) as huggingface's pytorch-pretrained-biggan 0.1.1 publishes it, in compact
pure PyTorch; its files load through generators/formats/biggan.py.

With the condition ``c = [z, E y]`` (z and the class embedding of the one-hot class y, both
``z_dim`` wide) and the truncation t (which also picks the batch-norm statistics):

    x = reshape(G_z c -> N x 4 x 4 x 16 ch) made channels-first
    x = block_k(x, c, t)  for k over the config's ``layers``  (self-attention before block
                                                                ``attention_layer_position``)
    image = tanh(conv(relu(BN_t(x)))[:, :3])

A block (up?, a, b) is a bottleneck residual block on ``a ch -> b ch`` channels: four rounds of
conditional batch norm, ReLU and a convolution (1x1 to ``a ch / 4``, 3x3, 3x3, 1x1 to ``b ch``),
nearest-neighbour 2x up-sampling before the first 3x3 when ``up``; the skip keeps the first half
of the channels when ``a != b`` and is up-sampled alike. Conditional batch norm normalises with
stored statistics (no batch statistics at inference) and modulates with the condition:

    BN_t(x, c) = (x - mu_t) / sqrt(var_t + eps) * (1 + S c) + O c

``mu_t``, ``var_t``: rows of the stored per-truncation tables (``n_stats`` rows, truncation in
steps of ``1 / (n_stats - 1)``), blended as the package blends them (``stored_statistics``).
Every convolution and linear layer but the class embedding is spectrally normalised in the
published files; the weights here are the normalised ones, computed once at load from the
stored power-iteration vectors (``spectral_normalised``).

Module and buffer names are the package's (``embeddings``, ``generator.gen_z``,
``generator.layers.K.bn_0.running_means``, ...), with each spectral-norm triple ``weight_orig``,
``weight_u``, ``weight_v`` folded into one ``weight``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.checks import number
from common.errors import UserError
from generators.base import Generator

#: Truncated-normal noise: values of N(0, 1) restricted to [-BOUND, BOUND] (then times t).
TRUNCNORM_BOUND = 2.0


# ---- the config ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BigGANConfig:
    """The architecture a pytorch-pretrained-biggan ``config.json`` describes.

    Args:
        output_dim: side of the images (128, 256 or 512 in the published files).
        z_dim: size of z, and of the class embedding (the package builds it ``z_dim`` wide;
            the file's ``class_embed_dim`` is not read by it, nor here).
        channel_width: ``ch``; every width is a multiple of it (16 ch at 4 x 4).
        num_classes: classes of the one-hot input (1000: ImageNet).
        layers: per block ``(up-sample?, in multiple, out multiple)`` of ``ch``.
        attention_layer_position: the block that self-attention precedes (none if out of range).
        eps: of the batch norms.
        n_stats: rows of the per-truncation batch-norm statistics (51: steps of 0.02).
    """

    output_dim: int
    z_dim: int
    channel_width: int
    num_classes: int
    layers: tuple[tuple[bool, int, int], ...]
    attention_layer_position: int
    eps: float = 1e-4
    n_stats: int = 51

    REQUIRED = ("output_dim", "z_dim", "channel_width", "num_classes", "layers",
                "attention_layer_position", "eps", "n_stats")

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json") -> "BigGANConfig":
        """A checked config from the dict of a ``config.json`` (keys the package writes:
        ``REQUIRED`` and ``class_embed_dim``; others are ignored, as the package ignores them)."""
        missing = [k for k in cls.REQUIRED if k not in raw]
        if missing:
            raise UserError(f"{where}: missing key(s) {missing}; a pytorch-pretrained-biggan "
                             f"config.json holds {list(cls.REQUIRED)} (and class_embed_dim)")

        def positive_int(key: str) -> int:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{where}: {key} must be a positive integer, got {value!r}")
            return value

        layers = raw["layers"]
        if not isinstance(layers, (list, tuple)) or not layers or not all(
                isinstance(block, (list, tuple)) and len(block) == 3 and isinstance(block[0], bool)
                and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in block[1:])
                for block in layers):
            raise UserError(f"{where}: layers must be a non-empty list of [up_sample (bool), "
                             f"in multiple (int), out multiple (int)], got {layers!r}")
        position = raw["attention_layer_position"]
        if isinstance(position, bool) or not isinstance(position, int):
            raise UserError(f"{where}: attention_layer_position must be an integer, got {position!r}")
        eps = raw["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise UserError(f"{where}: eps must be a positive number, got {eps!r}")
        config = cls(output_dim=positive_int("output_dim"), z_dim=positive_int("z_dim"),
                     channel_width=positive_int("channel_width"),
                     num_classes=positive_int("num_classes"),
                     layers=tuple((bool(u), int(a), int(b)) for u, a, b in layers),
                     attention_layer_position=position, eps=float(eps),
                     n_stats=positive_int("n_stats"))
        config.check(where)
        return config

    def check(self, where: str = "config") -> None:
        """What the package's network needs to run at all, said before anything is built."""
        ch, blocks = self.channel_width, self.layers
        problems = []
        if blocks[0][1] != 16:
            problems.append(f"the first block must read the 16 ch of the 4 x 4 input, not "
                            f"{blocks[0][1]} ch")
        if blocks[-1][2] != 1:
            problems.append(f"the last block must end at 1 ch (the final batch norm's width), "
                            f"not {blocks[-1][2]} ch")
        for k, ((_, a, b), nxt) in enumerate(zip(blocks, list(blocks[1:]) + [None])):
            if a != b and a != 2 * b:
                problems.append(f"block {k}: {a} ch -> {b} ch; a block keeps or halves its width")
            if a * ch % 4:
                problems.append(f"block {k}: {a * ch} channels are not divisible by 4 (bottleneck)")
            if nxt is not None and nxt[1] != b:
                problems.append(f"block {k + 1} reads {nxt[1]} ch but block {k} writes {b} ch")
        if 0 <= self.attention_layer_position < len(blocks) and (
                blocks[self.attention_layer_position][1] * ch) % 8:
            problems.append("self-attention needs a width divisible by 8")
        size = 4 * 2 ** sum(up for up, _, _ in blocks)
        if size != self.output_dim:
            problems.append(f"the blocks up-sample 4 px to {size} px, but output_dim is "
                            f"{self.output_dim}")
        if self.n_stats < 2:
            problems.append(f"n_stats must be at least 2, got {self.n_stats}")
        if problems:
            raise UserError(f"{where}: not a BigGAN-deep architecture the package can run: "
                             + "; ".join(problems))

    def to_dict(self) -> dict:
        """The ``config.json`` form (``layers`` as lists)."""
        out = asdict(self)
        out["layers"] = [list(layer) for layer in self.layers]
        return out


# ---- the published parametrisation at inference ------------------------------------------------
def spectral_normalised(weight_orig: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``weight_orig / sigma`` with ``sigma = u . (W v)``, W the weight as an ``out x rest``
    matrix: the weight ``torch.nn.utils.spectral_norm`` applies in eval mode (no power
    iteration; the stored ``u`` and ``v`` are used as they are)."""
    sigma = torch.dot(u, torch.mv(weight_orig.reshape(weight_orig.shape[0], -1), v))
    return weight_orig / sigma


def stored_statistics(means: torch.Tensor, variances: torch.Tensor, truncation: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch-norm mean and variance for ``truncation`` from the per-truncation tables
    (row i: truncation ``i / (rows - 1)``), blended as pytorch-pretrained-biggan blends them:
    with ``frac, i = modf(t / step)`` it weights row i by ``frac`` and row i + 1 by ``1 - frac``
    (the reverse of a linear interpolation; kept, so that images match the package's)."""
    step = 1.0 / (means.shape[0] - 1)
    frac, whole = math.modf(truncation / step)
    i = int(whole)
    if frac == 0.0:
        return means[i], variances[i]
    return (means[i] * frac + means[i + 1] * (1 - frac),
            variances[i] * frac + variances[i + 1] * (1 - frac))


def truncated_normal(shape: Sequence[int], generator: torch.Generator | None = None,
                     bound: float = TRUNCNORM_BOUND) -> torch.Tensor:
    """Standard normal values restricted to [-bound, bound] (scipy's ``truncnorm(-bound,
    bound)``), drawn by redrawing the values outside until none is left: seeded by
    ``generator``, exact in distribution."""
    x = torch.randn(*shape, generator=generator)
    outside = x.abs() > bound
    while outside.any():
        x[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = x.abs() > bound
    return x


class TruncationBatchNorm(nn.Module):
    """Batch norm with stored statistics per truncation value; conditional (gain ``1 + S c``,
    bias ``O c`` from the condition c: ``scale``, ``offset``) or with learned ``weight`` and
    ``bias`` (the final one)."""

    def __init__(self, channels: int, n_stats: int, eps: float, condition_dim: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.conditional = condition_dim is not None
        if self.conditional:
            self.scale = nn.Linear(condition_dim, channels, bias=False)
            self.offset = nn.Linear(condition_dim, channels, bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, truncation: float, condition: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = stored_statistics(self.running_means, self.running_vars, truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        gain = 1 + self.scale(condition)[:, :, None, None]
        bias = self.offset(condition)[:, :, None, None]
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * gain + bias


class GenBlock(nn.Module):
    """The bottleneck residual block of BigGAN-deep (see the module docstring)."""

    def __init__(self, in_ch: int, out_ch: int, condition_dim: int, up_sample: bool,
                 n_stats: int, eps: float) -> None:
        super().__init__()
        mid = in_ch // 4
        self.up_sample = up_sample
        widths = [(in_ch, mid, 1), (mid, mid, 3), (mid, mid, 3), (mid, out_ch, 1)]
        for i, (a, b, k) in enumerate(widths):
            setattr(self, f"bn_{i}", TruncationBatchNorm(a, n_stats, eps, condition_dim))
            setattr(self, f"conv_{i}", nn.Conv2d(a, b, k, padding=k // 2))

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        skip = x
        for i in range(4):
            x = torch.relu(getattr(self, f"bn_{i}")(x, truncation, condition))
            if i == 1 and self.up_sample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = getattr(self, f"conv_{i}")(x)
        if x.shape[1] != skip.shape[1]:  # a narrowing block keeps the first half of the input
            skip = skip[:, : skip.shape[1] // 2]
        if self.up_sample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return x + skip


class SelfAttention(nn.Module):
    """SAGAN self-attention: queries at every position (theta, ch / 8), keys (phi, ch / 8)
    and values (g, ch / 2) max-pooled 2x, output 1x1 convolution scaled by ``gamma`` and added."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snconv1x1_theta = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.snconv1x1_theta(x).flatten(2)                      # N x c/8 x hw
        key = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2)         # N x c/8 x hw/4
        value = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2)         # N x c/2 x hw/4
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # N x hw x hw/4
        out = (value @ attention.transpose(1, 2)).view(n, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class BigGANSynthesis(nn.Module):
    """The package's ``generator`` module: images from the condition ``c = [z, E y]``."""

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        ch, cond, self.ch = config.channel_width, 2 * config.z_dim, config.channel_width
        self.gen_z = nn.Linear(cond, 4 * 4 * 16 * ch)
        layers: list[nn.Module] = []
        for k, (up, a, b) in enumerate(config.layers):
            if k == config.attention_layer_position:
                layers.append(SelfAttention(a * ch))
            layers.append(GenBlock(a * ch, b * ch, cond, up, config.n_stats, config.eps))
        self.layers = nn.ModuleList(layers)
        self.bn = TruncationBatchNorm(ch, config.n_stats, config.eps)
        # The package convolves to ch channels and keeps the first 3: forward() computes only those.
        self.conv_to_rgb = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, condition: torch.Tensor, truncation: float,
                stop_after: int | None = None) -> torch.Tensor:
        """Images ``N x 3 x R x R`` in [-1, 1]; with ``stop_after=k`` the activations after
        ``layers[k - 1]`` (0: the reshaped output of ``gen_z``)."""
        x = self.gen_z(condition).view(-1, 4, 4, 16 * self.ch).permute(0, 3, 1, 2).contiguous()
        if stop_after == 0:
            return x
        for k, layer in enumerate(self.layers, 1):
            x = layer(x, condition, truncation) if isinstance(layer, GenBlock) else layer(x)
            if stop_after == k:
                return x
        x = torch.relu(self.bn(x, truncation))
        rgb = self.conv_to_rgb
        return torch.tanh(F.conv2d(x, rgb.weight[:3], rgb.bias[:3], padding=1))


# ---- the Generator ----------------------------------------------------------------------------
def check_classes_option(classes: Any, num_classes: int) -> list[int] | None:
    """``generator.classes`` as a list of class indices (None: every class)."""
    if classes is None:
        return None
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    try:
        chosen = list(classes)
    except TypeError:
        chosen = None
    if not chosen or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes
                         for c in chosen):
        raise UserError(f"generator.classes must be null (every class), one class index or a "
                         f"non-empty list of them, each in 0..{num_classes - 1}; got {classes!r}")
    return [int(c) for c in chosen]


class BigGANGenerator(Generator):
    """BigGAN-deep behind the Generator interface: space ``z`` only (no W), class-conditional.

    ``sample`` draws truncated-normal z (values in [-2, 2] times the truncation),
    ``sample_classes`` draws uniformly among the configured ``classes``, ``forward(z, y)`` needs
    the class indices ``y``. The truncation sets both the noise's range and the batch-norm
    statistics, as in pytorch-pretrained-biggan (``model(z, class_vector, truncation)`` with
    ``z = truncated_noise_sample(truncation=...)``).

    Args:
        config: the architecture (``BigGANConfig`` or its dict).
        truncation: in (0, 1].
        classes: None (every class), a class index, or a list of them: what ``sample_classes``
            draws from; ``forward`` takes any class.
        name: identifier recorded in checkpoints and directions files.
    """

    adapter = "biggan"

    def __init__(self, config: BigGANConfig | dict, truncation: float = 1.0,
                 classes: Any = None, name: str = "biggan") -> None:
        super().__init__()
        self.arch = config if isinstance(config, BigGANConfig) else BigGANConfig.from_dict(config)
        self.z_dim, self.resolution = self.arch.z_dim, self.arch.output_dim
        self.num_classes, self.name = self.arch.num_classes, name
        self.embeddings = nn.Linear(self.num_classes, self.z_dim, bias=False)
        self.generator = BigGANSynthesis(self.arch)
        self.set_truncation(truncation)
        self.classes = check_classes_option(classes, self.num_classes)
        self.register_buffer("_class_pool", torch.tensor(self.classes or [], dtype=torch.long),
                             persistent=False)

    def config(self) -> dict:
        """The architecture as a ``config.json`` dict."""
        return self.arch.to_dict()

    def set_truncation(self, truncation: float) -> "BigGANGenerator":
        self.truncation = number(truncation, "generator.truncation", low=0, high=1, low_open=True,
                                 what="BigGAN's truncation must be in (0, 1] (the package's "
                                 "range; 0.4 is a common choice)")
        return self

    def spectral_normalised_weights(self) -> list[str]:
        """The weights (state keys) that the published files store as spectral-norm triples
        ``weight_orig``, ``weight_u``, ``weight_v``: every linear and convolution layer of
        ``generator``, not the class embedding."""
        return [f"generator.{name}.weight" for name, m in self.generator.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv2d))]

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated-normal z, ``N x z_dim`` (independent of the classes ``y``)."""
        return (self.truncation * truncated_normal((n, self.z_dim), generator)).to(self.device)

    def sample_classes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` class indices drawn uniformly among the configured classes (all if None)."""
        if self.classes is None:
            return torch.randint(self.num_classes, (n,), generator=generator).to(self.device)
        pick = torch.randint(len(self.classes), (n,), generator=generator)
        return self._class_pool.cpu()[pick].to(self.device)

    # ---- images --------------------------------------------------------------------------
    def condition(self, latent: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``[z, E y]``: what every layer of the synthesis reads."""
        self.check_latent(latent)
        if y is None:
            raise UserError(f"{self.name} is class-conditional ({self.num_classes} classes): pass "
                             "the class indices y (e.g. y = generator.sample_classes(n))")
        self.check_classes(y, latent.shape[0])
        embedded = F.embedding(y.long(), self.embeddings.weight.t())
        return torch.cat([latent, embedded.to(latent.dtype)], dim=1)

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(self.condition(latent, y), self.truncation)

    # ---- hooks of the closed-form methods -------------------------------------------------
    def projection_weight(self, layers: Any = None) -> torch.Tensor:
        """SeFa's hook: the first linear layer's weight restricted to its z columns,
        ``(16 * 16 ch) x z_dim`` (the class embedding's columns are left out: it is not edited).
        The conditional batch norms read z too (through the whole condition); they are left out:
        this is the first weight that reads z, SeFa's general recipe."""
        self.layers(layers)  # one latent code: "all" / 0 only
        return self.generator.gen_z.weight[:, : self.z_dim]

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        """GANSpace's hook: layer 0 is the 4 x 4 map made by ``gen_z``, layer k the output of the
        package's ``generator.layers.{k-1}`` (the self-attention module counts as one),
        ``N x C x H x W``; classes ``y`` are needed, as for ``forward``."""
        layer = int(layer)
        if not 0 <= layer <= len(self.generator.layers):
            raise UserError(f"feature layer {layer}: {self.name} has layers "
                             f"0..{len(self.generator.layers)}")
        return self.generator(self.condition(latent, y), self.truncation, stop_after=layer)

    def identity(self) -> dict[str, Any]:
        """The base identity with BigGAN's truncation and the classes it samples."""
        return dict(super().identity(), truncation={"biggan": self.truncation},
                    classes=self.classes)


__all__ = ["BigGANConfig", "BigGANGenerator", "BigGANSynthesis", "GenBlock", "SelfAttention",
           "TruncationBatchNorm", "spectral_normalised", "stored_statistics", "truncated_normal",
           "check_classes_option", "TRUNCNORM_BOUND"]
