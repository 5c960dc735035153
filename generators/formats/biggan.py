"""pytorch-pretrained-biggan directories (huggingface's package, v0.1.1), loaded into the project's
``BigGANGenerator`` (generators/biggan.py) without that package.

A directory holds ``config.json`` (the architecture: ``BigGANConfig``) and ``pytorch_model.bin``
(``torch.save`` of the package's ``BigGAN.state_dict()``: ``embeddings.weight`` and
``generator.*``; spectral-norm layers as ``weight_orig`` / ``weight_u`` / ``weight_v``, batch
norms with ``running_means`` / ``running_vars`` tables of one row per truncation step). The
package's downloads are named ``biggan-deep-128-config.json`` and
``biggan-deep-128-pytorch_model.bin``: put them in one directory under the two plain names.

The weights are read with ``torch.load(weights_only=True)`` (``safe_torch_load``): a file that
references any Python global is refused without running anything. The state must fit the
architecture the config describes exactly (the package itself loads with ``strict=False``, which
would leave a missing tensor at its random initial value); the spectral-norm triples are folded
into plain weights once, here.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.errors import MissingFile, UserError
from generators.base import file_sha256
from generators.biggan import BigGANConfig, BigGANGenerator, spectral_normalised
from generators.formats.rosinality import safe_torch_load

ADAPTER = "biggan"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "pytorch_model.bin"
#: A key only a pytorch-pretrained-biggan state has (to recognise its weights file alone).
MARKER_KEY = "generator.gen_z.weight_orig"


def is_biggan_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / n).is_file() for n in (CONFIG_NAME, WEIGHTS_NAME))


def biggan_files(path: str | Path) -> tuple[Path, Path]:
    """``(config.json, pytorch_model.bin)`` of a BigGAN directory, or a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFile(f"BigGAN directory not found: {path} (pass the directory that "
                                f"holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
    if missing:
        raise MissingFile(
            f"{path} is not a complete pytorch-pretrained-biggan directory: {' and '.join(missing)} "
            f"missing. It must hold {CONFIG_NAME} and {WEIGHTS_NAME} (the package's downloads "
            f"biggan-deep-128-config.json and biggan-deep-128-pytorch_model.bin, renamed)")
    return path / CONFIG_NAME, path / WEIGHTS_NAME


def read_biggan_config(path: str | Path) -> BigGANConfig:
    """The checked architecture of a ``config.json``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not a JSON file ({err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a JSON {type(raw).__name__}, expected an object")
    return BigGANConfig.from_dict(raw, where=str(path))


def _few(keys: list[str], n: int = 6) -> str:
    return str(keys) if len(keys) <= n else f"{keys[:n]} ... ({len(keys)} in all)"


def fold_state(state: Any, generator: BigGANGenerator, where: str | Path) -> dict[str, torch.Tensor]:
    """The generator's state from a published one: every key and shape checked against the
    architecture (missing, unexpected, mismatched ones listed), spectral-norm triples folded
    into weights (``spectral_normalised``)."""
    if not isinstance(state, Mapping):
        raise UserError(f"{where} holds a {type(state).__name__}, expected the state dict of "
                         "a pytorch-pretrained-biggan BigGAN")
    native = generator.state_dict()
    folded = set(generator.spectral_normalised_weights())
    wanted: dict[str, tuple[int, ...]] = {}
    for key, value in native.items():
        if key in folded:
            stem = key[: -len("weight")]
            wanted.update({stem + "weight_orig": tuple(value.shape), stem + "weight_u": (value.shape[0],),
                           stem + "weight_v": (value[0].numel(),)})
        else:
            wanted[key] = tuple(value.shape)
    missing = sorted(wanted.keys() - state.keys())
    unexpected = sorted(map(str, state.keys() - wanted.keys()))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__}"
        f" vs {shape}" for k, shape in wanted.items()
        if k in state and not (isinstance(state[k], torch.Tensor) and tuple(state[k].shape) == shape))
    if missing or unexpected or mismatched:
        raise UserError(f"{where}: the weights do not fit the BigGAN its {CONFIG_NAME} describes: "
                         f"missing keys {_few(missing)}, unexpected keys {_few(unexpected)}, shape "
                         f"mismatches {_few(mismatched)}")
    out = {k: state[k] for k in native if k not in folded}
    for key in folded:
        stem = key[: -len("weight")]
        out[key] = spectral_normalised(*(state[stem + s].float() for s in ("weight_orig", "weight_u", "weight_v")))
    return out


def load_biggan(path: str | Path, truncation: float = 1.0, classes: Any = None,
                name: str | None = None, space: str = "z", truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> BigGANGenerator:
    """A frozen ``BigGANGenerator`` from a pytorch-pretrained-biggan directory.

    Args:
        path: the directory holding ``config.json`` and ``pytorch_model.bin``.
        truncation: in (0, 1]: the noise's range and the batch-norm statistics.
        classes: None (every class), one class index or a list: what ``sample_classes`` draws.
        name: identifier recorded in checkpoints; the directory's name by default.
        space, truncation_psi, truncation_cutoff: the view options of style-based generators;
            BigGAN takes only ``space="z"`` and no psi / cutoff (its truncation is ``truncation``).
    """
    path = Path(path)
    config_path, weights_path = biggan_files(path)
    if space != "z":
        raise UserError(f"BigGAN has only the z space (no mapping network, so no W or W+): use "
                         f"generator.space=z, not {space!r}")
    if truncation_psi != 1 or truncation_cutoff is not None:
        raise UserError("BigGAN has no truncation_psi / truncation_cutoff (no mapping network): "
                         "set generator.truncation (0, 1] instead")
    generator = BigGANGenerator(read_biggan_config(config_path), truncation, classes,
                                name=name or path.name)
    generator.load_state_dict(fold_state(safe_torch_load(weights_path), generator, weights_path))
    generator.sha256 = file_sha256(weights_path)
    generator.source = {"_target_": "generators.formats.load_checkpoint", "format": "biggan",
                        "path": str(path), "truncation": generator.truncation,
                        "classes": generator.classes, "name": generator.name}
    return generator.freeze()


__all__ = ["load_biggan", "read_biggan_config", "fold_state", "biggan_files", "is_biggan_dir",
           "CONFIG_NAME", "WEIGHTS_NAME", "ADAPTER"]
