"""Generators: the interface, built-in networks, loading of weights files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from common.io import read_weights_file
from generators.base import Generator, file_sha256
from generators.dcgan import DCGANGenerator, SNDiscriminator
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from generators.weights import WEIGHTS_DIR, WEIGHTS_FORMAT

ARCHITECTURES = {"dcgan": (DCGANGenerator, SNDiscriminator),
                 "stylegan2": (StyleGAN2Generator, StyleGAN2Discriminator)}
_REQUIRED_KEYS = {"format", "architecture", "generator_config", "generator"}
_OPTIONAL_KEYS = {"discriminator_config", "discriminator", "info"}


def shipped_weights() -> list[str]:
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))


def load_generator(path: str | Path, name: str | None = None, space: str = "z",
                   truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                   map_location: str = "cpu") -> Generator:
    """Load a frozen generator (and its discriminator, if stored) from a weights file.

    Args:
        path: a ``generator.pt`` written by GAN pretraining (or shipped in generators/weights/).
        name: identifier to record in checkpoints; the file's stem by default.
    """
    path, blob = read_weights_file(
        path, WEIGHTS_DIR, "generator", "train your own with `python train.py "
        "experiment=pretrain_dcgan` and pass generator.path=<run>/generator.pt", map_location)
    if not isinstance(blob, dict):
        raise ValueError(f"{path} holds a {type(blob).__name__}, expected a dict of generator weights")
    missing = sorted(_REQUIRED_KEYS - blob.keys())
    unexpected = sorted(blob.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
    if missing or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{path} is not a generator weights file of format {WEIGHTS_FORMAT!r}: missing keys "
            f"{missing}, unexpected keys {unexpected}, format {blob.get('format')!r}. A Lightning "
            "checkpoint (.ckpt) of pretraining is not one: use the generator.pt of that run")
    if blob["architecture"] not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {blob['architecture']!r}; "
                         f"known: {sorted(ARCHITECTURES)}")
    gen_cls, disc_cls = ARCHITECTURES[blob["architecture"]]
    gen_config = dict(blob["generator_config"], name=name or path.stem)
    generator = gen_cls(**gen_config)
    _load_state(generator, blob["generator"], path, "generator")
    generator.sha256 = file_sha256(path)
    if generator.style_based:
        generator.estimate_w_avg()
    generator.set_view(space, truncation_psi, truncation_cutoff)
    if "discriminator" in blob:
        discriminator = disc_cls(**blob["discriminator_config"])
        _load_state(discriminator, blob["discriminator"], path, "discriminator")
        for p in discriminator.parameters():
            p.requires_grad_(False)
        # Kept outside the module tree: it is not part of the generator's weights.
        object.__setattr__(generator, "discriminator", discriminator.eval())
    return generator.freeze()


def _load_state(module: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: the {what} weights do not fit the architecture: missing keys "
                         f"{result.missing_keys}, unexpected keys {result.unexpected_keys}")


def random_generator(architecture: str = "dcgan", init_seed: int = 0, frozen: bool = True,
                     space: str = "z", truncation_psi: float = 1.0,
                     truncation_cutoff: int | None = None, **kwargs) -> Generator:
    """A randomly initialised generator (tests, and the starting point of pretraining)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        generator = ARCHITECTURES[architecture][0](**kwargs)
        if generator.style_based:
            generator.estimate_w_avg()
    generator.set_view(space, truncation_psi, truncation_cutoff)
    generator.sha256 = state_sha256(generator)
    return generator.freeze() if frozen else generator


def state_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's weights: the identity of a generator that has no weights file."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["Generator", "DCGANGenerator", "SNDiscriminator", "load_generator", "random_generator",
           "shipped_weights", "file_sha256"]
