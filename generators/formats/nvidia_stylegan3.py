"""NVIDIA StyleGAN3 (-T / -R) pickles, read by ``generators.formats.nvidia``'s restricted
unpickler (nothing in the file runs), mapped onto ``generators.stylegan3.StyleGAN3Generator``.

Every size comes from the file: the Fourier features' channels, grid size, sampling rate and
bandwidth; each layer's channels, sizes, kernel, up- and down-sampling factors, padding, clamp
and its stored filters (separable, or radial for -R); the output scale; the stored input
transform, input gains (``magnitude_ema``) and mean w. A configuration outside what the network
covers (another channel count, a non-square grid, a missing attribute, filters of another shape)
is refused with a message naming it.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from generators.formats.nvidia import (
    NvidiaPickleError,
    PersistentObject,
    _need,
    _StateMap,
    _tensor,
    mapping_state,
    read_mapping,
    set_w_avg,
)
from generators.stylegan3 import StyleGAN3Generator

ADAPTER = "stylegan3-nvidia"
SUPPORTED = ("NVIDIA StyleGAN3 pickles of the stylegan3 repository (--cfg=stylegan3-t or "
             "stylegan3-r): RGB, square, with the published SynthesisInput / SynthesisLayer layout")
_LAYER = re.compile(r"L(\d+)_(\d+)_(\d+)")


def _square(value: Any, what: str, fail) -> int:
    sizes = np.asarray(value).reshape(-1).tolist() if value is not None else []
    if not sizes or len(set(sizes)) != 1:
        raise fail(f"{what} is {value!r}: only square sizes are supported")
    return int(sizes[0])


def _number(obj: PersistentObject, key: str, where: str, fail) -> float:
    value = obj.get(key)
    if value is None:
        raise fail(f"{where} has no {key}: not a StyleGAN3 layer this loader knows")
    return float(value)


def convert_stylegan3(g: PersistentObject, name: str = "stylegan3-nvidia", where: str = "G_ema") -> StyleGAN3Generator:
    """Map an NVIDIA StyleGAN3 ``Generator`` onto a new ``StyleGAN3Generator`` (not frozen,
    no view set)."""
    def fail(why: str) -> NvidiaPickleError:
        return NvidiaPickleError(f"{where}: {why}. Supported: {SUPPORTED}")

    m = read_mapping(g, where)
    synthesis = _need(g.module("synthesis"), "synthesis network", where)
    inp = _need(synthesis.module("input"), "synthesis.input", where)
    if inp.class_name != "SynthesisInput":
        raise fail(f"synthesis.input is a {inp.class_name}, not a SynthesisInput")
    kw = g.init_kwargs
    img_channels = int(kw.get("img_channels", synthesis.get("img_channels", 3)))
    if img_channels != 3:
        raise fail(f"img_channels={img_channels}: only RGB (3) generators are supported")
    resolution = int(synthesis.get("img_resolution", kw.get("img_resolution", 0)))

    names = [n for n in synthesis.children() if _LAYER.fullmatch(n)]
    names.sort(key=lambda n: int(_LAYER.fullmatch(n).group(1)))
    stored = synthesis.get("layer_names")
    if stored is not None and list(stored) != names:
        raise fail(f"layer_names {list(stored)} do not match the layers present {names}")
    if len(names) < 2 or [int(_LAYER.fullmatch(n).group(1)) for n in names] != list(range(len(names))):
        raise fail(f"synthesis layers {names} are not L0_*, L1_*, ... (two at least)")

    weight = _tensor(inp, "weight", where, "synthesis.input")
    input_config = {"channels": int(weight.shape[0]), "size": _square(inp.get("size"), "synthesis.input.size", fail),
                    "sampling_rate": _number(inp, "sampling_rate", "synthesis.input", fail),
                    "bandwidth": _number(inp, "bandwidth", "synthesis.input", fail)}
    layers = []
    for i, layer_name in enumerate(names):
        layer = synthesis.module(layer_name)
        path = f"synthesis.{layer_name}"
        w = _tensor(layer, "weight", where, path)
        tensors = layer.named_tensors()
        up_f, down_f = tensors.get("up_filter"), tensors.get("down_filter")
        if up_f is not None and up_f.ndim != 1:
            raise fail(f"{path}.up_filter has shape {tuple(up_f.shape)}: only separable up-sampling filters")
        if down_f is not None and down_f.ndim not in (1, 2):
            raise fail(f"{path}.down_filter has shape {tuple(down_f.shape)}")
        padding = [int(p) for p in (layer.get("padding") or [])]
        if len(padding) != 4:
            raise fail(f"{path}.padding is {layer.get('padding')!r}, expected 4 numbers")
        is_torgb = bool(layer.get("is_torgb", i == len(names) - 1))
        if is_torgb != (i == len(names) - 1):
            raise fail(f"{path}: the ToRGB layer must be the last one")
        if w.shape[-1] != w.shape[-2] or w.shape[-1] % 2 != 1:
            raise fail(f"{path} has a {w.shape[-2]}x{w.shape[-1]} kernel: only square odd kernels")
        clamp = layer.get("conv_clamp")
        layers.append(dict(
            in_channels=int(w.shape[1]), out_channels=int(w.shape[0]),
            in_size=_square(layer.get("in_size"), f"{path}.in_size", fail),
            out_size=_square(layer.get("out_size"), f"{path}.out_size", fail), kernel=int(w.shape[-1]),
            is_torgb=is_torgb, up=int(layer.get("up_factor", 1)), down=int(layer.get("down_factor", 1)),
            padding=padding, up_taps=int(up_f.shape[0]) if up_f is not None else 1,
            down_taps=int(down_f.shape[0]) if down_f is not None else 1,
            radial=down_f is not None and down_f.ndim == 2,
            conv_clamp=float(clamp) if clamp is not None else None,
            rate=int(_number(layer, "out_sampling_rate", path, fail))))
    if layers[-1]["out_channels"] != 3 or layers[-1]["out_size"] != resolution:
        raise fail(f"the last layer gives {layers[-1]['out_channels']} channels at {layers[-1]['out_size']} px, "
                   f"expected RGB at img_resolution={resolution}")

    with torch.random.fork_rng(devices=[]):  # the constructor's random init leaves no trace
        gen = StyleGAN3Generator(resolution=resolution, w_dim=m["w_dim"], z_dim=m["z_dim"], c_dim=m["c_dim"],
                                 n_mlp=len(m["fcs"]), lr_mlp=m["lr_mlp"], input=input_config, layers=layers,
                                 output_scale=float(synthesis.get("output_scale", 0.25)),
                                 design_filters=False, name=name)
    tensors = g.named_tensors()
    mapped = _StateMap(tensors, fail, supported=None)  # (fail names what is supported)
    take = mapped.take
    mapped.state.update(mapping_state(take, m["fcs"], m["c_dim"]))
    for key in ("weight", "affine.weight", "affine.bias", "transform", "freqs", "phases"):
        mapped.state[f"input.{key}"] = take(f"synthesis.input.{key}")
    for j, layer_name in enumerate(names):
        src = f"synthesis.{layer_name}"
        for key in ("weight", "bias", "affine.weight", "affine.bias", "magnitude_ema", "up_filter", "down_filter"):
            if f"{src}.{key}" in tensors:
                mapped.state[f"layers_.{j}.{key}"] = take(f"{src}.{key}")
    mapped.load_into(gen, also_known=("mapping.w_avg",))
    set_w_avg(gen, tensors, where)
    return gen


__all__ = ["ADAPTER", "SUPPORTED", "convert_stylegan3"]
