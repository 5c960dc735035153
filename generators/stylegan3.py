"""StyleGAN3 (Karras et al., "Alias-Free Generative Adversarial Networks", NeurIPS 2021), -T and
-R, in plain PyTorch: no custom CUDA op, every layer a few lines.

The synthesis starts from Fourier features (``SynthesisInput``): ``C`` sinusoids of fixed random
frequencies and phases, sampled on a grid ``size`` pixels wide (the image plus a margin), rotated
and translated by a transform the first code predicts (``affine(w) = (r_c, r_s, t_x, t_y)``) and by
a user transform (``transform``, the published way to translate and rotate StyleGAN3 images),
then mixed by a learned ``C x C`` matrix. Each ``SynthesisLayer`` then applies

    x = conv(x * s * g, W_hat) * demod               (modulated convolution, demodulated)
    x = down(clamp(lrelu(up(x + b)) * sqrt 2))       (the filtered leaky ReLU)

where ``s = A(w)`` are the layer's styles, ``g`` the stored input gain (``magnitude_ema ** -1/2``),
``W_hat`` the weight normalised per output channel, ``up`` zero insertion by ``up_factor``, padding
and FIR filtering with the stored ``up_filter`` (gain ``up_factor ** 2``), ``down`` FIR filtering
with ``down_filter`` and keeping every ``down_factor``-th sample. Filters are separable (1-D taps,
applied along each axis) or, for the -R configuration's non-critical layers, radially symmetric
(2-D taps). The last layer is the ToRGB (1 x 1, not demodulated, linear); the output is scaled by
``output_scale``. StyleGAN3 has no noise inputs.

Numerics against NVIDIA's reference (non-CUDA) path: the same operations in float32. NVIDIA also
scales every style vector by the root mean square over the whole batch before demodulating;
demodulation cancels that factor except inside its 1e-8 epsilon, so it is left out here (the
output then no longer depends on the other samples of the batch).

``StyleGAN3Generator`` offers the spaces z, w, w+ (one code for the input and one per layer) and
S: every layer's styles ``A(w)`` in synthesis order, ToRGB included, after the input's four
transform parameters (an "input" style layer of width 4).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from generators.base import Generator, StyleLayer
from generators.stylegan2 import EqualLinear, StyleMapping

SQRT2 = math.sqrt(2.0)


# ---- the filters ----------------------------------------------------------------------------
def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR filter as StyleGAN3 designs it: separable (1-D taps,
    ``scipy.signal.firwin``) or radially symmetric (a jinc times a 2-D Kaiser window); None for
    one tap (no filtering). Only fresh networks need it: files store their filters."""
    import scipy.signal
    import scipy.special

    if numtaps <= 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs),
                               dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    f[r == 0] = cutoff  # the limit of j1(2 pi c r) / (pi r) at r = 0
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f *= np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def fir(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
        padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (``x0, x1, y0, y1``; negative crops), filter with ``f``
    (a true convolution; 1-D taps along both axes, or 2-D taps) at total gain ``gain``, keep
    every ``down``-th sample. The filtering is a depthwise (grouped) convolution whose stride
    does the decimation: only the samples kept are computed (15 to 45 times faster on a CPU
    than filtering every channel as a batch of one-channel images)."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = (int(p) for p in padding)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    if f is None:
        x = x * gain if gain != 1 else x
        return x[:, :, ::down, ::down] if down > 1 else x
    f = f.to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 1:  # separable: along rows, then columns, each at gain ** 1/2
        k = f * math.sqrt(gain)
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c, stride=(1, down))
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c, stride=(down, 1))
    return F.conv2d(x, (f * gain)[None, None].expand(c, 1, -1, -1), groups=c, stride=down)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None,
                   bias: torch.Tensor, up: int, down: int, padding: Sequence[int], gain: float,
                   slope: float, clamp: float | None) -> torch.Tensor:
    """Bias, ``up``-times upsampling with ``fu``, leaky ReLU times ``gain``, clamp, filtering
    with ``fd`` and ``down``-times decimation: StyleGAN3's activation (its reference path)."""
    x = x + bias.view(1, -1, 1, 1)
    x = fir(x, fu, up=up, padding=padding, gain=up ** 2)
    x = (F.leaky_relu(x, slope) if slope != 1 else x) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return fir(x, fd, down=down)


# ---- the layers -----------------------------------------------------------------------------
def make_transform(translate: Sequence[float] = (0.0, 0.0), angle: float = 0.0) -> torch.Tensor:
    """The 3 x 3 matrix that rotates an image by ``angle`` degrees and translates it by
    ``translate`` (in units of half the image); its inverse is what ``SynthesisInput.transform``
    holds."""
    s, c = math.sin(angle / 360 * 2 * math.pi), math.cos(angle / 360 * 2 * math.pi)
    return torch.tensor([[c, s, float(translate[0])], [-s, c, float(translate[1])], [0, 0, 1]],
                        dtype=torch.float32)


class SynthesisInput(nn.Module):
    """The Fourier features: ``channels`` sinusoids on a ``size``-pixel grid at ``sampling_rate``,
    band-limited to ``bandwidth``, turned by the per-sample transform of the first code's
    ``affine`` and the user's ``transform`` (an inverse transform of the image)."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, size, sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = EqualLinear(w_dim, 4)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Features ``N x C x size x size`` from the transform parameters ``t = affine(w)``
        (``N x 4``: S space's input styles)."""
        n = t.shape[0]
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rot = torch.zeros(n, 3, 3, dtype=t.dtype, device=t.device)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0], 1
        shift = torch.eye(3, dtype=t.dtype, device=t.device).repeat(n, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rot @ shift @ self.transform.to(t.dtype)[None]
        phases = self.phases[None] + (self.freqs[None] @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs[None] @ transforms[:, :2, :2]                               # N x C x 2
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # the grid: sample centres in [-1, 1] scaled to half the size over the sampling rate
        coords = (torch.arange(self.size, dtype=t.dtype, device=t.device) * 2 + 1) / self.size - 1
        coords = coords * (0.5 * self.size / self.sampling_rate)
        gx, gy = coords[None, :].expand(self.size, -1), coords[:, None].expand(-1, self.size)
        grid = torch.stack([gx, gy], dim=-1)                                         # H x W x 2
        x = torch.einsum("hwd,ncd->nhwc", grid, freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """A modulated convolution and the filtered leaky ReLU (see the module docstring).

    Args:
        w_dim, in_channels, out_channels: sizes.
        kernel: 3 (-T), 1 (-R, and the ToRGB).
        is_torgb: the last layer (no demodulation, linear, styles scaled by the weight gain).
        up, down: the factors of up- and down-sampling around the activation.
        padding: ``x0, x1, y0, y1`` of the up-sampling step.
        up_taps, down_taps, radial: the filters' sizes (1: none) and whether ``down`` is radial.
        conv_clamp: the activations' clamp.
    """

    def __init__(self, w_dim: int, in_channels: int, out_channels: int, in_size: int, out_size: int,
                 kernel: int, is_torgb: bool, up: int, down: int, padding: Sequence[int],
                 up_taps: int, down_taps: int, radial: bool = False, conv_clamp: float | None = 256) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.in_size, self.out_size = in_channels, out_channels, in_size, out_size
        self.kernel, self.is_torgb, self.up, self.down = kernel, is_torgb, up, down
        self.padding, self.conv_clamp, self.radial = [int(p) for p in padding], conv_clamp, radial
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        # fresh networks get filters of the right shape; a file's own are loaded over them
        self.register_buffer("up_filter", torch.ones(up_taps) / up_taps if up_taps > 1 else None)
        shape = (down_taps, down_taps) if radial else (down_taps,)
        self.register_buffer("down_filter", torch.ones(shape) / down_taps ** len(shape) if down_taps > 1 else None)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``x`` through the layer with styles ``s = affine(w)`` (``N x in``)."""
        weight, gain = self.weight, self.magnitude_ema.rsqrt()
        if self.is_torgb:
            s = s / math.sqrt(self.in_channels * self.kernel ** 2)
        else:  # normalised weights and styles (the styles' scale cancels in the demodulation)
            weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
            s = s * s.square().mean(1, keepdim=True).rsqrt()
        x = F.conv2d(x * (s * gain)[:, :, None, None], weight, padding=self.kernel - 1)
        if not self.is_torgb:  # (the input gain scales the weights after the demodulation)
            demod = torch.rsqrt(s.square() @ weight.square().sum([2, 3]).t() + 1e-8)
            x = x * demod[:, :, None, None]
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, self.up, self.down,
                              self.padding, gain=1.0 if self.is_torgb else SQRT2,
                              slope=1.0 if self.is_torgb else 0.2, clamp=self.conv_clamp)


def layer_geometry(resolution: int, channel_base: int = 32768, channel_max: int = 512, num_layers: int = 14,
                   num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                   last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10, conv_kernel: int = 3,
                   filter_size: int = 6, lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                   img_channels: int = 3) -> dict[str, Any]:
    """The published design of a StyleGAN3 synthesis network from its hyperparameters (the
    geometric progression of cutoffs and stopbands, Karras et al. 2021, appendix F): the input's
    and every layer's sizes, rates, filters and padding, as ``StyleGAN3Generator`` takes them."""
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    layers = []
    for i in range(num_layers + 1):
        prev, is_torgb = max(i - 1, 0), i == num_layers
        critical = i >= num_layers - num_critical
        kernel = 1 if is_torgb else conv_kernel
        tmp_rate = max(rates[prev], rates[i]) * (1 if is_torgb else lrelu_upsampling)
        up, down = int(np.rint(tmp_rate / rates[prev])), int(np.rint(tmp_rate / rates[i]))
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        radial = use_radial_filters and not critical
        pad_total = (sizes[i] - 1) * down + 1 - (sizes[prev] + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad = [int(pad_lo), int(pad_total - pad_lo)] * 2
        layers.append(dict(
            in_channels=int(channels[prev]), out_channels=int(channels[i]), in_size=int(sizes[prev]),
            out_size=int(sizes[i]), kernel=kernel, is_torgb=is_torgb, up=up, down=down, padding=pad,
            up_taps=up_taps, down_taps=down_taps, radial=radial,
            rate=int(rates[i]), filters=dict(up=(up_taps, cutoffs[prev], half_widths[prev] * 2, tmp_rate),
                                             down=(down_taps, cutoffs[i], half_widths[i] * 2, tmp_rate))))
    return {"input": dict(channels=int(channels[0]), size=int(sizes[0]), sampling_rate=float(rates[0]),
                          bandwidth=float(cutoffs[0])), "layers": layers}


class StyleGAN3Generator(StyleMapping, Generator):
    """StyleGAN3 (-T or -R); spaces z, w, w+ and s (see generators/base.py).

    Args:
        resolution: output side in pixels.
        w_dim, z_dim, c_dim, n_mlp, lr_mlp: the mapping network (NVIDIA's: 512, 512, 0, 2, 0.01).
        input: the Fourier features' ``channels``, ``size``, ``sampling_rate``, ``bandwidth``.
        layers: each layer's settings (``SynthesisLayer``'s arguments, plus ``rate``: its output
            sampling rate); without ``input`` and ``layers``, ``layer_geometry`` designs both from
            the published hyperparameters ``geometry`` (``channel_base``, ``num_layers``, ...).
        output_scale: the images' scale (0.25).
        design_filters: design the Kaiser filters (a fresh network; a file brings its own).
        space, truncation_psi, truncation_cutoff, name: the view (see ``Generator``).
    """

    adapter = "stylegan3"
    bounded_output = False

    def __init__(self, resolution: int = 32, w_dim: int = 64, z_dim: int | None = None, c_dim: int = 0,
                 n_mlp: int = 2, lr_mlp: float = 0.01, input: dict | None = None,
                 layers: Sequence[dict] | None = None, output_scale: float = 0.25,
                 design_filters: bool = True, space: str = "w", truncation_psi: float = 1.0,
                 truncation_cutoff: int | None = None, name: str = "stylegan3",
                 geometry: dict | None = None) -> None:
        super().__init__()
        if input is None or layers is None:
            designed = layer_geometry(resolution, **dict(geometry or {}))
            input, layers = designed["input"], designed["layers"]
        elif geometry:
            raise UserError(f"StyleGAN3Generator: give input and layers, or the hyperparameters "
                            f"{sorted(geometry)}, not both")
        self.resolution, self.w_dim, self.z_dim, self.c_dim = resolution, w_dim, z_dim or w_dim, c_dim
        self.n_mlp, self.lr_mlp, self.output_scale, self.name = n_mlp, lr_mlp, output_scale, name
        self.num_classes = c_dim or None
        self.input_config = {k: input[k] for k in ("channels", "size", "sampling_rate", "bandwidth")}
        self.layer_configs = [dict(layer) for layer in layers]
        self.build_mapping(self.z_dim, w_dim, c_dim, n_mlp, lr_mlp)  # as StyleGAN2's
        self.input = SynthesisInput(w_dim, **self.input_config)
        keys = ("in_channels", "out_channels", "in_size", "out_size", "kernel", "is_torgb", "up", "down",
                "padding", "up_taps", "down_taps", "radial", "conv_clamp")
        self.layers_ = nn.ModuleList([SynthesisLayer(w_dim, **{k: layer[k] for k in keys if k in layer})
                                      for layer in self.layer_configs])
        if design_filters:
            for module, layer in zip(self.layers_, self.layer_configs):
                if "filters" in layer:
                    module.up_filter = design_lowpass_filter(*layer["filters"]["up"])
                    module.down_filter = design_lowpass_filter(*layer["filters"]["down"], radial=module.radial)
        self.register_buffer("w_avg", torch.zeros(w_dim), persistent=False)
        self.num_layers = len(self.layer_configs) + 1
        self.set_view(space, truncation_psi, truncation_cutoff)

    def config(self) -> dict:
        layers = [{k: v for k, v in layer.items() if k != "filters"} for layer in self.layer_configs]
        return {"resolution": self.resolution, "w_dim": self.w_dim, "z_dim": self.z_dim, "c_dim": self.c_dim,
                "n_mlp": self.n_mlp, "lr_mlp": self.lr_mlp, "input": dict(self.input_config),
                "layers": layers, "output_scale": self.output_scale, "design_filters": False, "name": self.name}

    def layer_resolutions(self) -> list[int]:
        """The sampling rate each per-layer code drives (the input's, then each layer's output)."""
        return [int(self.input_config["sampling_rate"])] + [int(layer.get("rate", layer["out_size"]))
                                                             for layer in self.layer_configs]

    # ---- S space -------------------------------------------------------------------------
    def style_layers(self) -> list[StyleLayer]:
        """The input's four transform parameters, then every layer's styles (ToRGB last)."""
        res = self.layer_resolutions()
        out = [StyleLayer("input", "input", res[0], 4, 0)]
        for i, (layer, module) in enumerate(zip(self.layer_configs, self.layers_)):
            kind = "torgb" if layer["is_torgb"] else "conv"
            out.append(StyleLayer(f"{kind}{i + 1}", kind, res[i + 1], module.in_channels, i + 1))
        return out

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        return [self.input.affine(ws[:, 0])] + [m.affine(ws[:, i + 1]) for i, m in enumerate(self.layers_)]

    def projection_weight(self, layers=None) -> torch.Tensor:
        """SeFa's hook: the style affines (as applied) of the layers ``layers`` drives, the
        ToRGB's and the input's transform left out."""
        chosen = [i for i in self.layers(layers) if 1 <= i < self.num_layers - 1]
        if not chosen:
            raise UserError(f"layers {layers!r} drive no modulated convolution (the input transform "
                            "and the ToRGB are left out)")
        return torch.cat([self.layers_[i - 1].affine.weight * self.layers_[i - 1].affine.scale for i in chosen])

    def style_reading_weights(self, layers=None) -> list[tuple[int, torch.Tensor]]:
        """S space's SeFa hook (as StyleGAN2's): each chosen convolution's normalised weight,
        ``(out k k) x in``."""
        chosen = []
        for i in self.layers(layers):
            layer = self.style_layers()[i]
            if layer.kind == "conv":
                w = self.layers_[i - 1].weight
                w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
                chosen.append((i, w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])))
        if not chosen:
            raise UserError(f"layers {layers!r} of S hold no convolution's styles")
        return chosen

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        """GANSpace's hook: the activations after synthesis layer ``layer`` (0: the Fourier
        features)."""
        if self.space == "s":
            self.check_latent(latent)
            styles = self.split_styles(latent)
        else:
            styles = self.styles(self.to_layers(latent, y))
        return self.synthesis_styles(styles, stop_after=int(layer))

    # ---- the input transform ---------------------------------------------------------------
    def set_input_transform(self, translate: Sequence[float] = (0.0, 0.0), angle: float = 0.0) -> None:
        """Translate (in half-image units) and rotate (degrees) every image drawn from now on,
        by the Fourier features' user transform (the published edit: the inverse of
        ``make_transform``). ``(0, 0), 0`` restores the identity."""
        self.input.transform.copy_(torch.linalg.inv(make_transform(translate, angle)).to(self.input.transform))

    @contextmanager
    def input_transform(self, translate: Sequence[float] = (0.0, 0.0), angle: float = 0.0):
        """``set_input_transform`` for the images drawn inside the block; the transform the
        generator had is restored after."""
        kept = self.input.transform.clone()
        self.set_input_transform(translate, angle)
        try:
            yield self
        finally:
            self.input.transform.copy_(kept)

    # ---- synthesis -----------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis_styles(self.styles(ws))

    def synthesis_styles(self, styles: Sequence[torch.Tensor], stop_after: int | None = None) -> torch.Tensor:
        if stop_after is not None and not 0 <= stop_after <= len(self.layers_):
            raise UserError(f"feature layer {stop_after}: {self.name} has layers 0..{len(self.layers_)}")
        x = self.input(styles[0])
        if stop_after == 0:
            return x
        for i, (module, s) in enumerate(zip(self.layers_, styles[1:])):
            x = module(x, s)
            if stop_after == i + 1:
                return x
        return x * self.output_scale
