"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020)
in compact pure PyTorch: no extension is compiled at import, every layer is a few lines.

Generator: a mapping network ``w = M(z)`` (pixel norm, ``n_mlp`` equalised-lr linear layers with
learning-rate multiplier ``lr_mlp``), a learned 4 x 4 constant, per resolution a modulated and
demodulated 3 x 3 convolution that upsamples (transposed convolution + [1, 3, 3, 1] blur), a
second one at that resolution, noise inputs, and ToRGB skips summed over resolutions:

    y = conv(x * s(w), W) * rsqrt(sum_{in,k} (W s(w))^2 + 1e-8)         (per sample, per channel)

Parameter names follow rosinality/stylegan2-pytorch, so one of its checkpoints loads with a
plain ``load_state_dict`` and an NVIDIA pickle maps onto the same modules (generators/formats/).
Layer ``i`` of the ``2 log2(R) - 2`` per-layer codes drives: 0 the 4 x 4 convolution, then for
each resolution an upsampling convolution (odd i, shared with the previous ToRGB) and a
convolution (even i); the last code drives the last ToRGB only.

Discriminator: the residual discriminator (1 x 1 from-RGB, residual blocks that halve the
resolution with a blur before the strided convolution, minibatch standard deviation, a 3 x 3
convolution and two linear layers).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.seeds import W_AVG_SEED
from generators.base import Generator, StyleLayer

SQRT2 = math.sqrt(2.0)


# ---- the primitive operations ---------------------------------------------------------------
def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """A normalised 2-D FIR kernel from a 1-D one (outer product)."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad both axes by ``pad`` (before, after), filter with
    ``kernel`` (a true convolution: the kernel is flipped), keep every ``down``-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def leaky_relu_gain(x: torch.Tensor, bias: torch.Tensor | None = None,
                    clamp: float | None = None) -> torch.Tensor:
    """Bias, leaky ReLU (slope 0.2) and gain sqrt(2): StyleGAN2's activation. ``clamp``
    bounds the result (NVIDIA's ``conv_clamp``, applied by its networks in every precision)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    x = F.leaky_relu(x, 0.2) * SQRT2
    return x.clamp(-clamp, clamp) if clamp is not None else x


class Blur(nn.Module):
    """FIR low-pass filter with fixed padding (``kernel`` is a stored buffer, as published)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling by zero insertion and FIR filtering (the ToRGB skip path)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as N(0, 1) / lr_mul and scaled
    by ``lr_mul / sqrt(in)`` at run time.

    Args:
        bias_init: initial bias (1 for the style affines: styles start near 1).
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        activation: ``"lrelu"`` for bias + leaky ReLU with gain sqrt(2), else linear.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_dim), lr_mul, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation == "lrelu":
            return leaky_relu_gain(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate (weights scaled by 1 / sqrt(fan_in))."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Learned bias + leaky ReLU with gain sqrt(2) (the "fused" activation of the CUDA code)."""

    def __init__(self, channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_relu_gain(x, self.bias, self.clamp)


# ---- the generator --------------------------------------------------------------------------
class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by the style ``s = A(w)`` and
    whose output is demodulated to unit expected variance. Computed as scale-input, shared
    convolution, scale-output (equal in cost to the grouped form on a CPU, and it batches).

    Args:
        demodulate: False for ToRGB.
        upsample: 2x transposed convolution followed by a blur (the synthesis' up-step).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        if upsample:
            p = len(blur_kernel) - 2 - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``x`` modulated by the styles ``s = modulation(w)`` (``N x in``: S space's codes)."""
        weight = self.weight[0] * self.scale            # out x in x k x k
        x = x * s[:, :, None, None]
        if self.upsample:
            x = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{in,k} (W s)^2 = s^2 @ (sum_k W^2)^T: one small matmul, no N x out x in x k x k
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)
            x = x * demod[:, :, None, None]
        return x


class ConstantInput(nn.Module):
    """The learned 4 x 4 input of the synthesis network."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated convolution, noise, bias and activation (``clamp``: NVIDIA's conv_clamp)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 clamp: float | None = None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch, clamp)

    def forward(self, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, s), noise))


class ToRGB(nn.Module):
    """1 x 1 modulated convolution (no demodulation) to RGB, added to the upsampled skip."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), clamp: float | None = None) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, s: torch.Tensor, skip: torch.Tensor | None = None):
        out = self.conv(x, s) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        return out if skip is None else out + self.upsample(skip)


def default_channels(resolution: int, channel_multiplier: int = 2, channel_max: int = 512) -> list[int]:
    """The published channel table (config-f), from 4 px up to ``resolution``."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return [min(channel_max, table[4 * 2 ** i] * (channel_multiplier if 4 * 2 ** i >= 64 else 1))
            for i in range(_log2(resolution) - 1)]


def _log2(resolution: int) -> int:
    log = math.log2(resolution)
    if resolution < 8 or log != int(log):
        raise UserError(f"resolution must be a power of two >= 8, got {resolution}")
    return int(log)


class StyleMapping:
    """What StyleGAN2 and StyleGAN3 share, for a ``Generator`` subclass: the mapping network
    (pixel norm, ``n_mlp`` equalised-lr linear layers ``style``, a class embedding ``embed`` for
    a conditional network, the mean w ``w_avg``) and the forward pass over ``synthesis(ws)`` and
    ``synthesis_styles(styles)``."""

    def build_mapping(self, z_dim: int, w_dim: int, c_dim: int, n_mlp: int, lr_mlp: float) -> None:
        in_dim = z_dim + (w_dim if c_dim else 0)
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(in_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mlp, activation="lrelu")
            for i in range(n_mlp)])
        if c_dim:
            self.embed = EqualLinear(c_dim, w_dim)

    def mapping(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """w = M(z) (with the class embedding for a conditional network); no truncation."""
        x = self.style[0](z)
        if self.c_dim:
            if y is None:
                raise UserError(f"{self.name} is conditional ({self.c_dim} classes): pass y")
            onehot = F.one_hot(y.long(), self.c_dim).to(z.dtype)
            x = torch.cat([x, self.style[0](self.embed(onehot))], dim=1)
        return self.style[1:](x)

    @torch.no_grad()
    def estimate_w_avg(self, n: int = 4096, seed: int = W_AVG_SEED) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``n`` mapped samples (rosinality's ``mean_latent``)."""
        rng = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=rng).to(self.device)
        y = torch.randint(self.c_dim, (n,), generator=rng).to(self.device) if self.c_dim else None
        self.w_avg.copy_(self.mapping(z, y).mean(0))
        return self.w_avg

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images from editing-space latents: mapped (Z), broadcast (W) or per-layer (W+) codes
        through ``synthesis``, or the styles themselves (S) through ``synthesis_styles``."""
        self.check_classes(y, latent.shape[0])
        if self.space == "s":
            self.check_latent(latent)
            return self.synthesis_styles(self.split_styles(latent))
        return self.synthesis(self.to_layers(latent, y))


class StyleGAN2Generator(StyleMapping, Generator):
    """StyleGAN2 generator; its editing space is ``z``, ``w`` or ``w+`` (see generators/base.py).

    Args:
        resolution: output side in pixels (a power of two >= 8).
        style_dim: size of w (and of z unless ``z_dim`` is given).
        n_mlp: linear layers of the mapping network (8 in the paper).
        channels: channels at 4, 8, ..., ``resolution`` px; None: the published table.
        channel_multiplier: of that table (2 for config-f).
        lr_mlp: learning-rate multiplier of the mapping network (0.01; not stored in checkpoints).
        blur_kernel: the FIR kernel of up-sampling.
        z_dim: size of z (NVIDIA networks may differ from ``style_dim``).
        c_dim: number of classes of a conditional network (NVIDIA's class embedding), 0 if none.
        conv_clamp: clamp of the activations (NVIDIA networks: 256), None for none.
        input_from_w: add a learned linear map of the first layer's w to the 4 x 4 constant
            input (zero at the start), so each sample can lay out its own 4 x 4 map as a DCGAN
            does; off in the published networks (see generators/weights/README.md).
        space, truncation_psi, truncation_cutoff, name: the view (see ``Generator``).
    """

    adapter = "stylegan2"
    bounded_output = False  # no tanh on the images, as published: mostly, not strictly, in [-1, 1]

    def __init__(self, resolution: int = 32, style_dim: int = 64, n_mlp: int = 4,
                 channels: Sequence[int] | None = None, channel_multiplier: int = 2,
                 lr_mlp: float = 0.01, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 z_dim: int | None = None, c_dim: int = 0, conv_clamp: float | None = None,
                 input_from_w: bool = False, space: str = "w", truncation_psi: float = 1.0,
                 truncation_cutoff: int | None = None, name: str = "stylegan2") -> None:
        super().__init__()
        log_size = _log2(resolution)
        channels = list(channels) if channels is not None else default_channels(resolution, channel_multiplier)
        if len(channels) != log_size - 1:
            raise UserError(f"channels: one count per resolution 4..{resolution} "
                             f"({log_size - 1} numbers), got {channels}")
        self.resolution, self.style_dim, self.n_mlp = resolution, style_dim, n_mlp
        self.channels, self.lr_mlp, self.blur_kernel = channels, lr_mlp, list(blur_kernel)
        self.z_dim, self.c_dim, self.conv_clamp = z_dim or style_dim, c_dim, conv_clamp
        self.num_classes = c_dim or None
        self.name = name

        self.build_mapping(self.z_dim, style_dim, c_dim, n_mlp, lr_mlp)
        self.input = ConstantInput(channels[0])
        self.input_from_w = input_from_w
        if input_from_w:  # zero at the start: the same network as without it, until it learns
            self.input_affine = EqualLinear(style_dim, channels[0] * 16)
            nn.init.zeros_(self.input_affine.weight)
        self.conv1 = StyledConv(channels[0], channels[0], 3, style_dim, blur_kernel=blur_kernel,
                                clamp=conv_clamp)
        self.to_rgb1 = ToRGB(channels[0], style_dim, upsample=False, clamp=conv_clamp)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for in_ch, out_ch in zip(channels[:-1], channels[1:]):
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel, clamp=conv_clamp))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel,
                                         clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel, clamp=conv_clamp))
        self.noises = nn.Module()
        for i in range(2 * log_size - 3):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        # The mean w (truncation's centre): stored by NVIDIA files, estimated for others.
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)
        self.num_layers = 2 * log_size - 2
        self.set_view(space, truncation_psi, truncation_cutoff)

    def config(self) -> dict:
        return {"resolution": self.resolution, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channels": list(self.channels), "lr_mlp": self.lr_mlp,
                "blur_kernel": list(self.blur_kernel), "z_dim": self.z_dim, "c_dim": self.c_dim,
                "conv_clamp": self.conv_clamp, "input_from_w": self.input_from_w, "name": self.name}

    @property
    def w_dim(self) -> int:
        return self.style_dim

    def layer_resolutions(self) -> list[int]:
        """The resolution each per-layer code drives (its convolution's output side)."""
        return [min(self.resolution, 4 * 2 ** ((i + 1) // 2)) for i in range(self.num_layers)]

    # ---- S space: the per-channel styles --------------------------------------------------
    def style_modules(self) -> list[ModulatedConv2d]:
        """Every modulated convolution in synthesis order, ToRGB layers included (StyleSpace's
        count): the 4 x 4 convolution and its ToRGB, then per resolution the up-sampling
        convolution, the convolution and the ToRGB."""
        mods = [self.conv1.conv, self.to_rgb1.conv]
        for up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            mods += [up.conv, conv.conv, to_rgb.conv]
        return mods

    def style_layers(self) -> list[StyleLayer]:
        """The layers of S space, in order (see ``StyleLayer``)."""
        if self.input_from_w:
            raise UserError(f"{self.name} lays out its 4 x 4 input from w (input_from_w), which no "
                             "style describes: S space needs a published StyleGAN2 layout; use "
                             "generator.space=w or w+")
        resolutions = [4, 4] + [4 * 2 ** (j + 1) for j in range(len(self.to_rgbs)) for _ in range(3)]
        layers = []
        for i, (mod, code, res) in enumerate(zip(self.style_modules(), self._codes(), resolutions)):
            kind = "conv" if mod.demodulate else "torgb"
            layers.append(StyleLayer(f"{kind}{i}", kind, res, mod.weight.shape[2], code))
        return layers

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """The styles ``s = A(w)`` of every layer of S (``N x channels`` each) from per-layer
        codes ``N x num_layers x style_dim``."""
        return [mod.modulation(ws[:, code]) for mod, code in zip(self.style_modules(), self._codes())]

    # ---- hooks of the closed-form methods -------------------------------------------------
    def styled_convs(self) -> list[StyledConv]:
        """The modulated 3 x 3 convolutions in order; convolution i reads per-layer code i."""
        return [self.conv1, *self.convs]

    def projection_weight(self, layers=None) -> torch.Tensor:
        """SeFa's hook: the style affine weights (as applied, lr scale included) of the
        convolutions driven by ``layers`` (a spec for ``layers()``), stacked: ``sum(in) x w_dim``.
        ToRGB affines are left out, as in SeFa's StyleGAN2 setting. In S space the weights that
        read the styles are the convolutions': see ``style_reading_weights``."""
        if self.space == "s":
            raise UserError("in S space the styles are read by each convolution's own weight: "
                            "use style_reading_weights (SeFa does)")
        convs = self.styled_convs()
        chosen = [i for i in self.layers(layers) if i < len(convs)]
        if not chosen:
            raise UserError(f"layers {layers!r} drive no convolution (only the last ToRGB)")
        return torch.cat([convs[i].conv.modulation.weight * convs[i].conv.modulation.scale
                          for i in chosen])

    def style_reading_weights(self, layers=None) -> list[tuple[int, torch.Tensor]]:
        """S space's SeFa hook: for each chosen style layer of a convolution (ToRGB layers are
        left out, as in W), its index and the weight that reads its styles, ``(out k k) x in``
        (the convolution's, as applied): a move n of the styles moves its input by W (x * n)."""
        chosen = []
        for i in self.layers(layers):
            layer, mod = self.style_layers()[i], self.style_modules()[i]
            if layer.kind == "conv":
                weight = (mod.weight[0] * mod.scale).permute(0, 2, 3, 1)  # out x k x k x in
                chosen.append((i, weight.reshape(-1, weight.shape[-1])))
        if not chosen:
            raise UserError(f"layers {layers!r} of S are ToRGB layers only: SeFa factorises the "
                            "convolutions' weights")
        return chosen

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        """GANSpace's hook: the activations after convolution ``layer`` (0 is the 4 x 4 one),
        ``N x C x H x W``, for editing-space latents."""
        if self.space == "s":
            self.check_latent(latent)
            return self.synthesis_styles(self.split_styles(latent), stop_after=int(layer))
        return self.synthesis(self.to_layers(latent, y), stop_after=int(layer))

    # ---- synthesis -----------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor, noise: Sequence[torch.Tensor] | None = None,
                  stop_after: int | None = None) -> torch.Tensor:
        """Images from per-layer codes ``N x num_layers x style_dim`` (tanh-free, as published);
        with ``stop_after=i`` the activations after convolution i instead."""
        offset = self.input_affine(ws[:, 0]).view(ws.shape[0], -1, 4, 4) if self.input_from_w else None
        styles = [mod.modulation(ws[:, code]) for mod, code in zip(self.style_modules(), self._codes())]
        return self.synthesis_styles(styles, noise, stop_after, offset)

    def _codes(self) -> list[int]:
        """The per-layer code each modulated convolution reads (``style_modules`` order)."""
        return [0, 1] + [c for i in range(len(self.to_rgbs)) for c in (2 * i + 1, 2 * i + 2, 2 * i + 3)]

    def synthesis_styles(self, styles: Sequence[torch.Tensor], noise: Sequence[torch.Tensor] | None = None,
                         stop_after: int | None = None, input_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Images from the styles of every modulated convolution (``style_modules`` order);
        ``stop_after`` and ``noise`` as for ``synthesis``."""
        if stop_after is not None and not 0 <= stop_after < len(self.convs) + 1:
            raise UserError(f"feature layer {stop_after}: {self.name} has convolutions "
                             f"0..{len(self.convs)}")
        n = styles[0].shape[0]
        if noise is None:
            if self.training:  # GAN training draws fresh noise; a frozen network uses its own
                noise = [torch.randn(n, 1, b.shape[2], b.shape[3], device=styles[0].device)
                         for b in self.noises.buffers()]
            else:
                noise = list(self.noises.buffers())
        x = self.input.input.expand(n, -1, -1, -1)
        if input_offset is not None:
            x = x + input_offset
        x = self.conv1(x, styles[0], noise[0])
        if stop_after == 0:
            return x
        skip = self.to_rgb1(x, styles[1])
        i = 1
        for j, (up, conv, n1, n2, to_rgb) in enumerate(zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                           noise[2::2], self.to_rgbs)):
            x = up(x, styles[2 + 3 * j], n1)
            if stop_after == i:
                return x
            x = conv(x, styles[3 + 3 * j], n2)
            if stop_after == i + 1:
                return x
            skip = to_rgb(x, styles[4 + 3 * j], skip)
            i += 2
        return skip


class ConvLayer(nn.Sequential):
    """[blur,] equalised convolution (stride 2 when downsampling), [bias + leaky ReLU]."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True,
                 activate: bool = True) -> None:
        layers: list[nn.Module] = []
        stride, padding = 1, kernel_size // 2
        if downsample:
            p = len(blur_kernel) - 2 + kernel_size - 1
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel,
                              bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator; returns one unbounded score per image.

    Args:
        resolution: input side in pixels.
        channels: channels at 4, 8, ..., ``resolution`` px (as the generator's); None: the table.
        stddev_group: group size of the minibatch standard deviation feature.
    """

    def __init__(self, resolution: int = 32, channels: Sequence[int] | None = None,
                 channel_multiplier: int = 2, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 stddev_group: int = 4) -> None:
        super().__init__()
        log_size = _log2(resolution)
        channels = list(channels) if channels is not None else default_channels(resolution, channel_multiplier)
        self.resolution, self.channels, self.blur_kernel = resolution, channels, list(blur_kernel)
        self.stddev_group = stddev_group
        blocks: list[nn.Module] = [ConvLayer(3, channels[-1], 1)]
        for i in range(log_size - 2, 0, -1):
            blocks.append(ResBlock(channels[i], channels[i - 1], blur_kernel))
        self.convs = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(channels[0] + 1, channels[0], 3)
        self.final_linear = nn.Sequential(EqualLinear(channels[0] * 16, channels[0], activation="lrelu"),
                                          EqualLinear(channels[0], 1))

    def config(self) -> dict:
        return {"resolution": self.resolution, "channels": list(self.channels),
                "blur_kernel": list(self.blur_kernel), "stddev_group": self.stddev_group}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.convs(images)
        n, c, h, w = x.shape
        group = math.gcd(n, self.stddev_group)  # any batch size works
        std = x.reshape(group, -1, 1, c, h, w)  # (reshape: x may be channels-last)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        x = torch.cat([x, std.repeat(group, 1, h, w)], 1)
        x = self.final_conv(x).reshape(n, -1)
        return self.final_linear(x).squeeze(1)
