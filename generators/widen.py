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

``python -m generators.widen <pretraining last.ckpt> <out.ckpt> --channels 256,128,64,32``
writes a pretraining checkpoint to resume with ``ckpt_path=<out.ckpt>`` and the same channels
in ``method.module.generator.channels``. Adam's moments are widened too (zero first moments,
and the old mean of the second moments for the new entries, so the first steps of the new
weights are not outsized).
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from common.io import atomic_torch_save
from generators.pretrain import submodule_state
from generators.stylegan2 import StyleGAN2Generator


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
    shape = list(t.shape)
    extra_shape = shape[:dim] + [new - shape[dim]] + shape[dim + 1:]
    extra = fill if isinstance(fill, torch.Tensor) else torch.full(extra_shape, float(fill))
    return torch.cat([t, extra.to(t.dtype)], dim=dim)


def widen_state(state: dict[str, torch.Tensor], old: list[int], new: list[int],
                rng: torch.Generator) -> dict[str, torch.Tensor]:
    """The synthesis-network state dict of a StyleGAN2 with ``old`` channels per resolution,
    widened to ``new`` (each at least the old one): the same function, more channels.

    ``state`` holds the generator's own keys (``conv1.conv.weight``, ...). The same ``rng``
    state given twice gives the same new weights (the EMA copy must match the generator's).
    """
    if len(old) != len(new) or any(n < o for o, n in zip(old, new)):
        raise ValueError(f"channels can only grow, resolution by resolution: {old} -> {new}")
    out = dict(state)
    for layer, (read, write) in _layer_levels(len(old)).items():
        if layer == "input":
            key = "input.input"
            t = state[key]
            out[key] = _grow(t, 1, new[0], torch.randn(1, new[0] - old[0], *t.shape[2:], generator=rng))
            continue
        conv = f"{layer}.conv"
        w = state[f"{conv}.weight"]                          # 1 x out x in x k x k
        if write is not None and new[write] > old[write]:    # new output rows: a fresh layer's
            rows = torch.randn(1, new[write] - old[write], *w.shape[2:], generator=rng)
            w = _grow(w, 1, new[write], rows)
            out[f"{layer}.activate.bias"] = _grow(state[f"{layer}.activate.bias"], 0, new[write], 0.0)
        if new[read] > old[read]:
            w = w * math.sqrt(new[read] / old[read])         # equalised lr: same effective weights
            cols = torch.randn(1, w.shape[1], new[read] - old[read], *w.shape[3:], generator=rng)
            if write is not None:
                cols[:, :old[write]] = 0.0                   # old outputs never read new channels
            else:
                cols.zero_()                                 # RGB reads none of them yet
            w = _grow(w, 2, new[read], cols)
            mod_w, mod_b = state[f"{conv}.modulation.weight"], state[f"{conv}.modulation.bias"]
            out[f"{conv}.modulation.weight"] = _grow(
                mod_w, 0, new[read], torch.randn(new[read] - old[read], mod_w.shape[1], generator=rng))
            out[f"{conv}.modulation.bias"] = _grow(mod_b, 0, new[read], 1.0)  # StyleGAN's bias init
        out[f"{conv}.weight"] = w
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


def widen_checkpoint(ckpt_path: str | Path, out_path: str | Path, channels: list[int],
                     seed: int = 0) -> Path:
    """A GAN pretraining checkpoint of a StyleGAN2, widened to ``channels`` (see the module
    docstring); the discriminator, the loops and the data stream are unchanged."""
    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists: choose another output path")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt.get("architecture") != "stylegan2":
        raise ValueError(f"{ckpt_path} is not a StyleGAN2 pretraining checkpoint "
                         f"(architecture {ckpt.get('architecture')!r})")
    config = dict(ckpt["generator_config"])
    old = list(config["channels"])
    state = ckpt["state_dict"]
    # Parameter order of the old generator: the order of Adam's per-parameter states.
    names = [n for n, _ in StyleGAN2Generator(**{**config, "name": None}).named_parameters()]
    shapes_old = {n: state[f"generator.{n}"].shape for n in names}
    for prefix in ("generator", "ema"):
        grown = widen_state(submodule_state(state, prefix), old, channels,
                            torch.Generator().manual_seed(seed))
        state.update({f"{prefix}.{k}": v for k, v in grown.items()})
    opt_g = ckpt["optimizer_states"][0]
    if len(opt_g["state"]) != len(names):
        raise ValueError("the generator's optimizer state does not match its parameters")
    for i, name in enumerate(names):
        opt_g["state"][i] = _widen_moments(opt_g["state"][i], shapes_old[name],
                                           state[f"generator.{name}"].shape)
    ckpt["generator_config"] = {**config, "channels": list(channels)}
    atomic_torch_save(ckpt, out_path)
    return out_path


def main() -> None:
    parser = argparse.ArgumentParser(description="Widen a StyleGAN2 pretraining checkpoint "
                                     "without changing the images it draws.")
    parser.add_argument("checkpoint", help="a StyleGAN2 pretraining checkpoint (last.ckpt)")
    parser.add_argument("out", help="the widened checkpoint to write")
    parser.add_argument("--channels", required=True,
                        help="channels per resolution from 4 px, e.g. 256,128,64,32")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new weights")
    args = parser.parse_args()
    channels = [int(c) for c in re.split(r"[,\s]+", args.channels.strip("[] ")) if c]
    print(widen_checkpoint(args.checkpoint, args.out, channels, args.seed))


if __name__ == "__main__":
    main()
