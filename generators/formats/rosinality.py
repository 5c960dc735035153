"""Checkpoints of rosinality/stylegan2-pytorch, loaded into the project's ``StyleGAN2Generator``.

Its ``train.py`` saves (``torch.save``) a dict ``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim``,
``args`` (an ``argparse.Namespace``) and ``ada_aug_p``; its ``convert_weight.py`` (official
TensorFlow weights converted) saves ``g_ema`` and ``latent_avg``, with ``g`` and ``d`` optionally.
``generators/stylegan2.py`` uses the same parameter and buffer names, so the states load as they
are; every size is read from the tensors (people train narrower networks than the published
channel table). The file is read with ``weights_only=True`` and only ``argparse.Namespace``
allowed besides tensors and containers: a file that references any other Python global is
refused without running anything.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from common.errors import MissingFile, UserError
from common.pickles import RefusedPickle, load_weights_only
from common.seeds import W_AVG_SEED
from generators.base import file_sha256
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

ADAPTER = "stylegan2-rosinality"
#: What a rosinality train.py checkpoint holds (convert_weight.py files: g_ema, latent_avg[, g, d]).
TRAIN_KEYS = ("g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p")
#: The Python classes such a file may reference besides tensors and plain containers.
ALLOWED_GLOBALS = (argparse.Namespace,)
_DEFAULT_BLUR = (1, 3, 3, 1)


#: A torch file that references globals outside the allow-list (``common.pickles``).
UnsafeCheckpointError = RefusedPickle


def safe_torch_load(path: str | Path) -> Any:
    """The contents of a torch file (zip or legacy), read with ``weights_only=True`` and the
    Namespace allow-list; tensors are memory-mapped where the file allows it.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references another global (nothing was executed).
        ValueError: not a readable torch file.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"checkpoint not found: {path}")
    return load_weights_only(path, mmap=zipfile.is_zipfile(path), allowed=ALLOWED_GLOBALS)


def read_rosinality(path: str | Path) -> dict:
    """The dict stored in a rosinality ``.pt`` checkpoint, read without executing pickled code
    (``weights_only=True``, ``argparse.Namespace`` allowed for ``args``).

    Raises:
        UnsafeCheckpointError: the file references any other global (it is not read).
        ValueError: not a torch file, or not a dict.
    """
    blob = safe_torch_load(path)
    if not isinstance(blob, dict):
        raise UserError(f"{path} holds a {type(blob).__name__}, expected the dict of a "
                         f"rosinality/stylegan2-pytorch checkpoint (keys {list(TRAIN_KEYS)})")
    return blob


# ---- sizes from the tensors -------------------------------------------------------------------
def _indexed(state: Mapping[str, Any], pattern: str) -> dict[int, Any]:
    """``{i: tensor}`` for the keys matching ``pattern`` (a regex with one ``(\\d+)``)."""
    rx = re.compile(pattern)
    return {int(m.group(1)): v for k, v in state.items() if (m := rx.fullmatch(k))}


def _consecutive(found: dict[int, Any], start: int, what: str) -> list[Any]:
    keys = sorted(found)
    if keys != list(range(start, start + len(keys))):
        raise UserError(f"{what}: expected consecutive indices from {start}, found {keys}")
    return [found[k] for k in keys]


def _blur_kernel(state: Mapping[str, Any], key: str) -> list[float]:
    """The 1-D FIR kernel behind a stored 2-D blur buffer (the default written as [1, 3, 3, 1])."""
    if key not in state:
        return list(_DEFAULT_BLUR)
    k2 = state[key].float()
    k1 = k2.sum(0) / k2.sum()
    default = torch.tensor(_DEFAULT_BLUR, dtype=torch.float32)
    if k1.shape == default.shape and torch.allclose(k1, default / default.sum(), atol=1e-6):
        return list(_DEFAULT_BLUR)
    return k1.tolist()


def stylegan2_config_from_state(state: Mapping[str, Any]) -> dict:
    """``StyleGAN2Generator`` arguments read from the shapes of a rosinality generator state
    (``g_ema`` or ``g``): ``resolution``, ``style_dim``, ``n_mlp``, ``channels`` (one per
    resolution 4..R) and ``blur_kernel``. ``lr_mlp`` is not stored in the file: pass it
    separately. The discriminator's: ``stylegan2_discriminator_config_from_state``.
    """
    if "style.1.weight" not in state or "conv1.conv.weight" not in state:
        raise UserError("not a rosinality StyleGAN2 generator state: no style.1.weight / "
                         f"conv1.conv.weight among its keys (first keys {list(state)[:8]})")
    mapping = _consecutive(_indexed(state, r"style\.(\d+)\.weight"), 1, "mapping layers style.K")
    style_dim = int(mapping[0].shape[1])
    for i, w in enumerate(mapping, 1):
        if tuple(w.shape) != (style_dim, style_dim):
            raise UserError(f"style.{i}.weight is {tuple(w.shape)}: every mapping layer must be "
                             f"{style_dim} x {style_dim} (rosinality's z and w have one size)")
    convs = _consecutive(_indexed(state, r"convs\.(\d+)\.conv\.weight"), 0, "synthesis convs.i")
    if len(convs) % 2:
        raise UserError(f"{len(convs)} synthesis convolutions: expected two per resolution")
    channels = [int(state["conv1.conv.weight"].shape[1])]
    for i in range(0, len(convs), 2):
        up, conv = convs[i], convs[i + 1]
        if up.ndim != 5 or up.shape[2] != channels[-1] or conv.shape[1:3] != (up.shape[1],) * 2:
            raise UserError(f"convs.{i} / convs.{i + 1} shapes {tuple(up.shape)} / "
                             f"{tuple(conv.shape)} do not chain from {channels[-1]} channels")
        channels.append(int(up.shape[1]))
    return {"resolution": 4 * 2 ** (len(convs) // 2), "style_dim": style_dim,
            "n_mlp": len(mapping), "channels": channels,
            "blur_kernel": _blur_kernel(state, "convs.0.conv.blur.kernel")}


def stylegan2_discriminator_config_from_state(state: Mapping[str, Any]) -> dict:
    """``StyleGAN2Discriminator`` arguments read from a rosinality discriminator state (``d``):
    ``resolution`` (from the number of residual blocks), ``channels`` (4..R) and
    ``blur_kernel``."""
    if "convs.0.0.weight" not in state or "final_linear.1.weight" not in state:
        raise UserError("not a rosinality StyleGAN2 discriminator state: no convs.0.0.weight / "
                         f"final_linear.1.weight among its keys (first keys {list(state)[:8]})")
    blocks = _consecutive(_indexed(state, r"convs\.(\d+)\.conv2\.1\.weight"), 1,
                          "discriminator blocks convs.j")
    top = int(state["convs.0.0.weight"].shape[0])
    channels = [top]  # from the highest resolution down
    for j, w in enumerate(blocks, 1):
        if w.shape[1] != channels[-1]:
            raise UserError(f"convs.{j}.conv2.1.weight is {tuple(w.shape)}: expected "
                             f"{channels[-1]} input channels")
        channels.append(int(w.shape[0]))
    channels.reverse()
    if int(state["final_conv.0.weight"].shape[0]) != channels[0]:
        raise UserError("final_conv.0.weight does not match the 4 px channels "
                         f"{channels[0]}: {tuple(state['final_conv.0.weight'].shape)}")
    return {"resolution": 4 * 2 ** len(blocks), "channels": channels,
            "blur_kernel": _blur_kernel(state, "convs.1.conv2.0.kernel")}


# ---- loading ------------------------------------------------------------------------------------
def _load_strict(module: torch.nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                        for k, v in expected.items()
                        if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or unexpected or mismatched:
        raise UserError(f"{path}: the {what} state does not fit the StyleGAN2 network built from "
                         f"its shapes: missing keys {missing}, unexpected keys {unexpected}, "
                         f"shape mismatches {mismatched}")
    module.load_state_dict(state, strict=True)


def _describe(blob: Mapping[str, Any]) -> str:
    keys = sorted(map(str, blob))
    if blob.get("format") is not None and "generator" in blob:
        kind = f"a weights file of format {blob.get('format')!r} (load it with generators.load_generator)"
    elif "state_dict" in blob or "pytorch-lightning_version" in blob:
        kind = "a Lightning checkpoint"
    elif {"G", "D", "G_ema"} & set(blob):
        kind = "an NVIDIA-style network dict"
    elif {"g", "d"} <= set(blob):
        kind = "a rosinality checkpoint without the moving-average generator g_ema"
    else:
        return f"this does not look like a rosinality/stylegan2-pytorch checkpoint; keys found: {keys}"
    return f"this looks like {kind}; keys found: {keys}"


def load_rosinality(path: str | Path, space: str = "w", truncation_psi: float = 1.0,
                    truncation_cutoff: int | None = None, name: str | None = None,
                    lr_mlp: float = 0.01, discriminator: bool = True) -> StyleGAN2Generator:
    """A frozen ``StyleGAN2Generator`` built from the ``g_ema`` of a rosinality checkpoint.

    The architecture is read from the tensor shapes (``stylegan2_config_from_state``), the state
    is loaded strictly, and the discriminator ``d`` (if stored and ``discriminator``) is attached
    as ``generator.discriminator`` (frozen, eval mode, outside the module tree).

    Truncation centre: rosinality's ``train.py`` files store no ``w_avg`` (its code computes
    ``mean_latent(n)`` from samples), so ``w_avg`` is estimated here from 4096 mapped samples
    (``estimate_w_avg``, fixed seed: deterministic per file). Files made by its
    ``convert_weight.py`` store the TensorFlow ``latent_avg``: that one is used instead.
    ``generator.w_avg_origin`` records which.

    Args:
        path: the ``.pt`` file.
        space, truncation_psi, truncation_cutoff: the view (see ``generators.base.Generator``).
        name: identifier recorded in checkpoints; the file's stem by default.
        lr_mlp: learning-rate multiplier of the mapping network. It is a constructor argument of
            rosinality's Generator that the file does not store (its train.py always uses the
            default 0.01); it scales the stored mapping weights at run time, so a network
            trained with another value needs that value here.
        discriminator: attach the stored discriminator ``d`` when there is one.
    """
    path = Path(path)
    blob = read_rosinality(path)
    if "g_ema" not in blob:
        raise UserError(f"{path} has no 'g_ema' (the moving-average generator that "
                         f"rosinality/stylegan2-pytorch samples from): {_describe(blob)}")
    state = blob["g_ema"]
    config = stylegan2_config_from_state(state)
    generator = StyleGAN2Generator(**config, lr_mlp=lr_mlp, name=name or path.stem)
    _load_strict(generator, state, path, "generator (g_ema)")
    generator.adapter = ADAPTER
    generator.sha256 = file_sha256(path)
    latent_avg = blob.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == generator.style_dim:
        generator.w_avg.copy_(latent_avg.reshape(-1).float())
        generator.w_avg_origin = "file (latent_avg)"
    else:
        generator.estimate_w_avg()
        generator.w_avg_origin = f"estimated (estimate_w_avg: 4096 samples, seed {W_AVG_SEED})"
    generator.set_view(space, truncation_psi, truncation_cutoff)
    generator.source = {"_target_": "generators.formats.load_checkpoint", "format": "rosinality",
                        "path": str(path), "space": space, "truncation_psi": truncation_psi,
                        "truncation_cutoff": truncation_cutoff, "name": generator.name,
                        "lr_mlp": lr_mlp, "discriminator": discriminator}
    if discriminator and "d" in blob:
        d_config = stylegan2_discriminator_config_from_state(blob["d"])
        disc = StyleGAN2Discriminator(**d_config)
        _load_strict(disc, blob["d"], path, "discriminator (d)")
        for p in disc.parameters():
            p.requires_grad_(False)
        # Kept outside the module tree: it is not part of the generator's weights.
        object.__setattr__(generator, "discriminator", disc.eval())
    return generator.freeze()


__all__ = ["read_rosinality", "load_rosinality", "stylegan2_config_from_state",
           "stylegan2_discriminator_config_from_state", "safe_torch_load", "UnsafeCheckpointError",
           "ADAPTER", "TRAIN_KEYS"]
