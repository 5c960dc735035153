"""Generators: the interface, built-in networks, loading of weights files."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from common.errors import MissingFile, UserError
from common.io import read_weights_file, resolve_shipped
from generators.base import Generator, check_truncation, file_sha256
from generators.check import GeneratorCheckError, check_generator
from generators.dcgan import DCGANGenerator, SNDiscriminator
from generators.formats import LOADERS, detect_format  # its project format calls load_generator lazily
from generators.formats.biggan import CONFIG_NAME, WEIGHTS_NAME
from generators.glo import GLOGenerator
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from generators.stylegan3 import StyleGAN3Generator
from generators.weights import WEIGHTS_DIR, WEIGHTS_FORMAT

BIGGAN_FILES = (CONFIG_NAME, WEIGHTS_NAME)

# architecture -> (generator class, discriminator class or None: GLO trains without one)
ARCHITECTURES = {"dcgan": (DCGANGenerator, SNDiscriminator),
                 "glo": (GLOGenerator, None),
                 "stylegan2": (StyleGAN2Generator, StyleGAN2Discriminator),
                 "stylegan3": (StyleGAN3Generator, StyleGAN2Discriminator)}
_REQUIRED_KEYS = {"format", "architecture", "generator_config", "generator"}
_OPTIONAL_KEYS = {"discriminator_config", "discriminator", "info"}


def shipped_weights() -> list[str]:
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))


def load_generator(path: str | Path, name: str | None = None, space: str = "z",
                   truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                   regressor: dict | None = None, map_location: str = "cpu",
                   truncation: float | None = None, classes=None) -> Generator:
    """Load a frozen generator (and its discriminator, if stored) from a weights file: the one
    entry point for every format (``generators.formats.detect_format``): the project's own
    weights, rosinality/stylegan2-pytorch checkpoints, NVIDIA StyleGAN2 pickles and
    pytorch-pretrained-biggan directories, none of them unpickled in a way that could run code.
    The generator passes the start-up check (``generators.check``) or is refused.

    Args:
        path: a ``generator.pt`` written by GAN pretraining or GLO (or a name shipped in
            generators/weights/), a rosinality ``.pt``, an NVIDIA ``.pkl``, or a BigGAN
            directory (``config.json`` + ``pytorch_model.bin``).
        name: identifier to record in checkpoints; the file's stem by default.
        space, truncation_psi, truncation_cutoff: the view (``Generator.set_view``).
        regressor: ``{"path": ..., "factors": ...}``, the attribute regressor that reads this
            generator's images for the evaluation (None: factor metrics are skipped).
        truncation, classes: BigGAN only: its truncation in (0, 1] (None: 1) and the classes
            it samples (None: all, an index, or a list).
    """
    check_truncation(truncation_psi, truncation_cutoff)  # before any file is read
    source = {"_target_": "generators.load_generator", "path": str(path), "name": name,
              "space": space, "truncation_psi": truncation_psi,
              "truncation_cutoff": truncation_cutoff, "regressor": regressor}
    resolved = resolve_shipped(path, WEIGHTS_DIR)
    # A file, or a directory with a BigGAN file in it, is recognised; a missing path gets
    # read_weights_file's message below.
    biggan_like = resolved.is_dir() and any((resolved / n).is_file() for n in BIGGAN_FILES)
    if resolved.is_dir() and not biggan_like:
        raise MissingFile(f"generator weights: {path} is a directory; pass the weights file "
                                f"itself (e.g. {path}/generator.pt), or a BigGAN directory holding "
                                f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    fmt = detect_format(resolved) if resolved.is_file() or biggan_like else "project"
    if fmt != "biggan" and (truncation is not None or classes is not None):
        raise UserError(f"generator.truncation and generator.classes are options of BigGAN "
                         f"directories; {path} is a {fmt!r} checkpoint (a StyleGAN's truncation "
                         "is generator.truncation_psi)")
    if fmt == "biggan":
        generator = LOADERS[fmt](resolved, truncation=1.0 if truncation is None else truncation,
                                 classes=plain(classes), space=space, truncation_psi=truncation_psi,
                                 truncation_cutoff=truncation_cutoff, name=name or resolved.name)
        source.update(truncation=generator.truncation, classes=generator.classes)
    elif fmt != "project":
        generator = LOADERS[fmt](resolved, space=space, truncation_psi=truncation_psi,
                                 truncation_cutoff=truncation_cutoff, name=name or resolved.stem)
    if fmt != "project":
        generator.source, generator.regressor_spec = plain(source), _regressor_spec(regressor)
        check_generator(generator)
        return generator
    path, blob = read_weights_file(
        path, WEIGHTS_DIR, "generator", "train your own with `python train.py "
        "experiment=pretrain_dcgan` and pass generator.path=<run>/generator.pt", map_location)
    if not isinstance(blob, dict):
        raise UserError(f"{path} holds a {type(blob).__name__}, expected a dict of generator weights")
    missing = sorted(_REQUIRED_KEYS - blob.keys())
    unexpected = sorted(blob.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
    if missing or blob.get("format") != WEIGHTS_FORMAT:
        raise UserError(
            f"{path} is not a generator weights file of format {WEIGHTS_FORMAT!r}: missing keys "
            f"{missing}, unexpected keys {unexpected}, format {blob.get('format')!r}. A Lightning "
            "checkpoint (.ckpt) of pretraining is not one: use the generator.pt of that run")
    if blob["architecture"] not in ARCHITECTURES:
        raise UserError(f"{path}: unknown architecture {blob['architecture']!r}; "
                         f"known: {sorted(ARCHITECTURES)}")
    gen_cls, disc_cls = ARCHITECTURES[blob["architecture"]]
    gen_config = dict(blob["generator_config"], name=name or path.stem)
    generator = gen_cls(**gen_config)
    _load_state(generator, blob["generator"], path, "generator")
    generator.sha256 = file_sha256(path)
    if generator.style_based:
        generator.estimate_w_avg()
    generator.set_view(space, truncation_psi, truncation_cutoff)
    generator.source, generator.regressor_spec = plain(source), _regressor_spec(regressor)
    if "discriminator" in blob:
        if disc_cls is None:
            raise UserError(f"{path}: architecture {blob['architecture']!r} has no "
                             "discriminator, but the file stores one")
        discriminator = disc_cls(**blob["discriminator_config"])
        _load_state(discriminator, blob["discriminator"], path, "discriminator")
        for p in discriminator.parameters():
            p.requires_grad_(False)
        # Kept outside the module tree: it is not part of the generator's weights.
        object.__setattr__(generator, "discriminator", discriminator.eval())
    check_generator(generator.freeze())
    return generator


def _load_state(module: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{path}: the {what} weights do not fit the architecture: missing keys "
                         f"{result.missing_keys}, unexpected keys {result.unexpected_keys}")


def random_generator(architecture: str = "dcgan", init_seed: int = 0, frozen: bool = True,
                     space: str = "z", truncation_psi: float = 1.0,
                     truncation_cutoff: int | None = None, regressor: dict | None = None,
                     **kwargs) -> Generator:
    """A randomly initialised generator (tests, and the starting point of pretraining);
    checked at start-up (``generators.check``) when frozen."""
    source = {"_target_": "generators.random_generator", "architecture": architecture,
              "init_seed": init_seed, "space": space, "truncation_psi": truncation_psi,
              "truncation_cutoff": truncation_cutoff, "regressor": regressor, **kwargs}
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    check_truncation(truncation_psi, truncation_cutoff)  # before the network is built
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        generator = ARCHITECTURES[architecture][0](**kwargs)
        if generator.style_based:
            generator.estimate_w_avg()
    generator.set_view(space, truncation_psi, truncation_cutoff)
    generator.source, generator.regressor_spec = plain(source), _regressor_spec(regressor)
    generator.sha256 = state_sha256(generator)
    if frozen:  # an unfrozen one is a GAN pretraining's starting point, not a run's generator
        check_generator(generator.freeze())
    return generator


def plain(value):
    """Plain Python containers (Hydra hands over DictConfig / ListConfig): what files record."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value


def _regressor_spec(regressor: dict | None) -> dict | None:
    if regressor is None:
        return None
    spec = plain(regressor)
    if "path" not in spec or set(spec) - {"path", "factors"}:
        raise UserError(f"generator.regressor must be {{path: <regressor.pt>, factors: "
                         f"<world|null|list>}}, got {spec}")
    return spec


def state_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's weights: the identity of a generator that has no weights file."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["Generator", "DCGANGenerator", "GLOGenerator", "SNDiscriminator", "load_generator",
           "random_generator", "shipped_weights", "file_sha256", "check_generator",
           "GeneratorCheckError"]
