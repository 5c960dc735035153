"""Widen a trained StyleGAN2 without changing what it draws (Net2Net-style growth).

A generator that has stopped improving for lack of channels need not be trained again from
scratch: every feature map can be given more channels such that the images stay exactly the
same, and training then goes on with the extra capacity. For each widened feature map the new
channels are computed by new rows of the layer that produces it (random, like a fresh layer),
and read by new columns of the layers that consume it, set to zero. The old outputs therefore
never see the new channels until training moves those zeros; the new channels already carry
signal, so the zeros get gradients at once. Equalised learning rates scale a weight by
``1 / sqrt(fan_in)``: consumers' old weights are rescaled so that the wider fan-in leaves their
effective weights as they were (the ToRGB layers are not demodulated, so this is what keeps the
colours exact).

The discriminator grows the same way (``--d-channels``), with the same scores, except at 4 px:
its minibatch standard deviation is a mean over that level's channels, so that level stays.

``python -m generators.widen <pretraining last.ckpt> <out.ckpt> --channels 256,128,64,32``
writes a pretraining checkpoint to resume with ``ckpt_path=<out.ckpt>`` and the same channels
in ``method.generator.channels`` (``method.discriminator.channels`` for
``--d-channels``). Adam's moments are widened too (zero first moments,
and the old mean of the second moments for the new entries, so the first steps of the new
weights are not outsized).
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from common.errors import UserError
from common.io import atomic_torch_save
from generators.pretrain import submodule_state
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator


def _layer_levels(n_levels: int) -> dict[str, tuple[int | None, int | None]]:
    """For each weight-bearing layer of the synthesis network: (level it reads, level it writes),
    a level being one resolution's feature map (0 for 4 px); None for RGB or the constant."""
    levels = {"input": (None, 0), "conv1": (0, 0), "to_rgb1": (0, None)}
    for i in range(n_levels - 1):
        levels[f"convs.{2 * i}"] = (i, i + 1)
        levels[f"convs.{2 * i + 1}"] = (i + 1, i + 1)
        levels[f"to_rgbs.{i}"] = (i + 1, None)
    return levels


def _grow(t: torch.Tensor, dim: int, new: int, fill: torch.Tensor | float) -> torch.Tensor:
    """``t`` with ``new`` entries along ``dim``: a tensor ``fill`` of that shape, or a constant."""
    extra = fill if isinstance(fill, torch.Tensor) else torch.full(_extra_shape(t, dim, new), float(fill))
    return torch.cat([t, extra.to(t.dtype)], dim=dim)


def _widen_weight(w: torch.Tensor, axis: int, out: tuple[int, int], inp: tuple[int, int],
                  rng: torch.Generator) -> torch.Tensor:
    """An equalised-lr weight whose output axis ``axis`` grows from ``out[0]`` to ``out[1]`` rows
    and whose input axis (the next one) grows from ``inp[0]`` to ``inp[1]`` columns: new rows
    random like a fresh layer's, old weights rescaled for the wider fan-in, new columns random
    for the new rows and zero for the old ones (old outputs never read the new channels)."""
    if out[1] > out[0]:
        w = _grow(w, axis, out[1], torch.randn(_extra_shape(w, axis, out[1]), generator=rng))
    if inp[1] > inp[0]:
        w = w * math.sqrt(inp[1] / inp[0])
        cols = torch.randn(_extra_shape(w, axis + 1, inp[1]), generator=rng)
        cols.narrow(axis, 0, out[0]).zero_()
        w = _grow(w, axis + 1, inp[1], cols)
    return w


def _extra_shape(t: torch.Tensor, dim: int, new: int) -> list[int]:
    shape = list(t.shape)
    shape[dim] = new - shape[dim]
    return shape


def _check_growth(old: list[int], new: list[int]) -> None:
    if len(old) != len(new) or any(n < o for o, n in zip(old, new)):
        raise UserError(f"channels can only grow, resolution by resolution: {old} -> {new}")


def widen_state(state: dict[str, torch.Tensor], old: list[int], new: list[int],
                rng: torch.Generator) -> dict[str, torch.Tensor]:
    """The synthesis-network state dict of a StyleGAN2 with ``old`` channels per resolution,
    widened to ``new`` (each at least the old one): the same function, more channels.

    ``state`` holds the generator's own keys (``conv1.conv.weight``, ...). The same ``rng``
    state given twice gives the same new weights (the EMA copy must match the generator's).
    """
    _check_growth(old, new)
    out = dict(state)
    for layer, (read, write) in _layer_levels(len(old)).items():
        if layer == "input":
            key = "input.input"
            t = state[key]
            out[key] = _grow(t, 1, new[0], torch.randn(_extra_shape(t, 1, new[0]), generator=rng))
            for name in ("weight", "bias"):  # the w-driven input, if any: new channels' rows zero
                if f"input_affine.{name}" in state:
                    rows = state[f"input_affine.{name}"].unflatten(0, (old[0], 16))
                    out[f"input_affine.{name}"] = _grow(rows, 0, new[0], 0.0).flatten(0, 1)
            continue
        conv = f"{layer}.conv"
        rows = (old[write], new[write]) if write is not None else (3, 3)
        out[f"{conv}.weight"] = _widen_weight(state[f"{conv}.weight"], 1, rows,
                                              (old[read], new[read]), rng)
        if rows[1] > rows[0]:
            out[f"{layer}.activate.bias"] = _grow(state[f"{layer}.activate.bias"], 0, rows[1], 0.0)
        if new[read] > old[read]:
            mod_w, mod_b = state[f"{conv}.modulation.weight"], state[f"{conv}.modulation.bias"]
            out[f"{conv}.modulation.weight"] = _grow(
                mod_w, 0, new[read], torch.randn(_extra_shape(mod_w, 0, new[read]), generator=rng))
            out[f"{conv}.modulation.bias"] = _grow(mod_b, 0, new[read], 1.0)  # StyleGAN's bias init
    return out


def _discriminator_layers(n_levels: int) -> dict[str, tuple[str | None, int | None, int]]:
    """For each convolution of the residual discriminator: (its bias key or None, the level it
    reads, None for RGB, and the level it writes); ResBlock ``convs.k`` reads level n - k."""
    layers: dict[str, tuple[str | None, int | None, int]] = {
        "convs.0.0.weight": ("convs.0.1.bias", None, n_levels - 1)}
    for k in range(1, n_levels):
        level, block = n_levels - k, f"convs.{k}"
        layers[f"{block}.conv1.0.weight"] = (f"{block}.conv1.1.bias", level, level)
        layers[f"{block}.conv2.1.weight"] = (f"{block}.conv2.2.bias", level, level - 1)
        layers[f"{block}.skip.1.weight"] = (None, level, level - 1)
    return layers


def widen_discriminator_state(state: dict[str, torch.Tensor], old: list[int], new: list[int],
                              rng: torch.Generator) -> dict[str, torch.Tensor]:
    """A StyleGAN2 discriminator's state dict widened from ``old`` to ``new`` channels per
    resolution with the same scores. The 4 px level stays as it is: the minibatch standard
    deviation averages over its channels, so new channels there would change the scores."""
    _check_growth(old, new)
    if new[0] != old[0]:
        raise UserError(f"the discriminator's 4 px channels ({old[0]}) cannot change: its "
                         f"minibatch standard deviation averages over them; widen 8 px and up")
    out = dict(state)
    for key, (bias, read, write) in _discriminator_layers(len(old)).items():
        inp = (3, 3) if read is None else (old[read], new[read])
        out[key] = _widen_weight(state[key], 0, (old[write], new[write]), inp, rng)
        if bias is not None:
            out[bias] = _grow(state[bias], 0, new[write], 0.0)
    return out


def _widen_moments(moments: dict, shape_old: torch.Size, shape_new: torch.Size) -> dict:
    """Adam's state of one parameter, padded to its new shape."""
    if shape_old == shape_new:
        return moments
    grown = dict(moments)
    for name in ("exp_avg", "exp_avg_sq"):
        t = moments[name]
        fill = 0.0 if name == "exp_avg" else float(t.mean())
        big = torch.full(shape_new, fill, dtype=t.dtype)
        big[tuple(slice(0, s) for s in shape_old)] = t
        grown[name] = big
    return grown


def _remap_optimizer(opt_state: dict, old_names: list[str], new_names: list[str],
                     shapes_old: dict, state: dict, prefix: str) -> None:
    """Adam's per-parameter states, kept by name from the old network's parameter order to the
    new one's, padded to the grown shapes in ``state``; a new parameter starts fresh (step 0)."""
    if len(opt_state["state"]) != len(old_names) or len(opt_state["param_groups"]) != 1:
        raise UserError(f"the {prefix}'s optimizer state does not match its parameters")
    by_name = {name: opt_state["state"][i] for i, name in enumerate(old_names)}
    step = next(iter(by_name.values()))["step"]
    remapped = {}
    for i, name in enumerate(new_names):
        shape = state[f"{prefix}.{name}"].shape
        if name in by_name:
            remapped[i] = _widen_moments(by_name[name], shapes_old[name], shape)
        else:
            remapped[i] = {"step": torch.zeros_like(step), "exp_avg": torch.zeros(shape),
                           "exp_avg_sq": torch.zeros(shape)}
    opt_state["state"] = remapped
    opt_state["param_groups"][0]["params"] = list(range(len(new_names)))


def _parameter_names(network: type, config: dict) -> list[str]:
    """The parameter order of a network built from ``config``: the order of Adam's states."""
    return [n for n, _ in network(**config).named_parameters()]


def widen_checkpoint(ckpt_path: str | Path, out_path: str | Path, channels: list[int] | None = None,
                     seed: int = 0, discriminator_channels: list[int] | None = None,
                     input_from_w: bool = False) -> Path:
    """A GAN pretraining checkpoint of a StyleGAN2 whose generator is widened to ``channels``
    and/or given the w-driven input (``input_from_w``, zero at first), and/or whose
    discriminator is widened to ``discriminator_channels`` (see the module docstring; None
    leaves that part as it is): the same images and scores. The loops and the data stream are
    unchanged."""
    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists: choose another output path")
    if channels is None and discriminator_channels is None and not input_from_w:
        raise UserError("nothing to widen: give the generator's channels, the discriminator's, "
                         "or the w-driven input")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt.get("architecture") != "stylegan2":
        raise UserError(f"{ckpt_path} is not a StyleGAN2 pretraining checkpoint "
                         f"(architecture {ckpt.get('architecture')!r})")
    state = ckpt["state_dict"]
    if channels is not None or input_from_w:
        config = dict(ckpt["generator_config"])
        old = list(config["channels"])
        new_config = {**config, "channels": list(channels or old),
                      "input_from_w": bool(config.get("input_from_w")) or input_from_w}
        old_names = _parameter_names(StyleGAN2Generator, config)
        shapes_old = {n: state[f"generator.{n}"].shape for n in old_names}
        added = {}
        if new_config["input_from_w"] and not config.get("input_from_w"):  # zero at first
            size = (old[0] * 16, config["style_dim"])
            added = {"input_affine.weight": torch.zeros(size), "input_affine.bias": torch.zeros(size[0])}
        for prefix in ("generator", "ema"):
            sub = {**submodule_state(state, prefix), **added}
            if channels is not None:
                sub = widen_state(sub, old, channels, torch.Generator().manual_seed(seed))
            state.update({f"{prefix}.{k}": v for k, v in sub.items()})
        _remap_optimizer(ckpt["optimizer_states"][0], old_names,
                         _parameter_names(StyleGAN2Generator, new_config), shapes_old, state,
                         "generator")
        ckpt["generator_config"] = new_config
    if discriminator_channels is not None:
        config = dict(ckpt["discriminator_config"])
        names = _parameter_names(StyleGAN2Discriminator, config)
        shapes_old = {n: state[f"discriminator.{n}"].shape for n in names}
        grown = widen_discriminator_state(submodule_state(state, "discriminator"),
                                          list(config["channels"]), discriminator_channels,
                                          torch.Generator().manual_seed(seed + 1))
        state.update({f"discriminator.{k}": v for k, v in grown.items()})
        ckpt["discriminator_config"] = {**config, "channels": list(discriminator_channels)}
        _remap_optimizer(ckpt["optimizer_states"][1], names,
                         _parameter_names(StyleGAN2Discriminator, ckpt["discriminator_config"]),
                         shapes_old, state, "discriminator")
    _record_widening(ckpt, channels, discriminator_channels, input_from_w)
    atomic_torch_save(ckpt, out_path)
    return out_path


def _record_widening(ckpt: dict, channels: list[int] | None,
                     discriminator_channels: list[int] | None, input_from_w: bool) -> None:
    """The options the widened checkpoint resumes with, in its recorded run signature (train.py
    compares it with the run asked for): the new channels, the w-driven input."""
    options = (ckpt.get("run_signature") or {}).get("options") or {}
    generator, discriminator = options.get("generator"), options.get("discriminator")
    if isinstance(generator, dict):
        if channels is not None:
            generator["channels"] = list(channels)
        if input_from_w:
            generator["input_from_w"] = True
    if isinstance(discriminator, dict) and discriminator_channels is not None:
        discriminator["channels"] = list(discriminator_channels)


def _channel_list(text: str | None) -> list[int] | None:
    return None if text is None else [int(c) for c in re.split(r"[,\s]+", text.strip("[] ")) if c]


def main() -> None:
    parser = argparse.ArgumentParser(description="Widen a StyleGAN2 pretraining checkpoint "
                                     "without changing its images or its discriminator's scores.")
    parser.add_argument("checkpoint", help="a StyleGAN2 pretraining checkpoint (last.ckpt)")
    parser.add_argument("out", help="the widened checkpoint to write")
    parser.add_argument("--channels", help="the generator's channels per resolution from 4 px, "
                        "e.g. 256,128,64,32")
    parser.add_argument("--d-channels", help="the discriminator's channels per resolution from "
                        "4 px (the 4 px entry stays), e.g. 64,128,128,64")
    parser.add_argument("--input-from-w", action="store_true", help="give the generator the "
                        "w-driven 4 x 4 input (zero at first; see StyleGAN2Generator)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new weights")
    args = parser.parse_args()
    try:
        print(widen_checkpoint(args.checkpoint, args.out, _channel_list(args.channels), args.seed,
                               _channel_list(args.d_channels), args.input_from_w))
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f"widen: {err}") from None


if __name__ == "__main__":
    main()
