"""Rebuild a generator from the config a file records, as data: nothing a file names runs.

A directions file records how to rebuild its generator (``meta["generator_source"]``) and a run
folder's ``config.yaml`` holds the generator block it was trained with. Both are data from
whoever shared them. Handing them to ``hydra.utils.instantiate`` would call whatever
``_target_`` they name, at any depth (``torch.load`` of a pickle in the bytes of an argument
runs a shell command), so they never reach it. ``rebuild_generator`` instead:

1. accepts only the project's own loaders as the top-level ``_target_``
   (``generators.load_generator``, ``generators.random_generator``) and the adapter of your own
   network (``generators.adapter.ModuleGenerator``);
2. checks every other value is plain data of the type the loader's argument takes (strings,
   numbers, booleans, null, lists and mappings of them), with no Hydra key (``_target_``,
   ``_args_``, ``_partial_``, ...) and no interpolation (``${...}``) at any depth;
3. rebuilds an adapter's network (a ``_target_`` in the user's own code) only when its class is
   one the user named on the command line (``trusted``), and refuses it in one line otherwise;
4. calls the loader with those checked values directly.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from common.errors import UserError
from common.runs import resolve_device

SPACES = ("z", "w", "w+", "s")
ADAPTER = "generators.adapter.ModuleGenerator"
_MAX_DEPTH = 8
_MAX_ITEMS = 10_000


class RecordedConfigError(UserError):
    """A recorded generator config that is not plain data for one of the project's loaders."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_data(value: Any, where: str, depth: int = 0, budget: list[int] | None = None) -> None:
    """Refuse anything but strings, numbers, booleans, null, lists and mappings of them, a
    Hydra key or an interpolation anywhere inside ``value``."""
    budget = budget if budget is not None else [_MAX_ITEMS]
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        raise RecordedConfigError(f"{where}: nested too deep or too large for a generator setting")
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordedConfigError(f"{where}={value}: not a finite number")
        return
    if isinstance(value, str):
        if "${" in value:
            raise RecordedConfigError(f"{where}={value!r}: an interpolation; a recorded config "
                                      "holds plain values only")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordedConfigError(f"{where}: a key of type {type(key).__name__}")
            if key.startswith("_") and key.endswith("_"):  # _target_, _args_, _partial_, ...
                raise RecordedConfigError(f"{where}.{key}: a Hydra key that would call code; a "
                                          "recorded config holds plain values only")
            _plain_data(item, f"{where}.{key}", depth + 1, budget)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain_data(item, f"{where}[{i}]", depth + 1, budget)
        return
    raise RecordedConfigError(f"{where}: a {type(value).__name__}, not plain data")


# ---- the type each recorded argument must have -----------------------------------------
def _str(value, where):
    if not isinstance(value, str) or not value or "\x00" in value:
        raise RecordedConfigError(f"{where}={value!r}: expected a non-empty string")


def _opt_str(value, where):
    if value is not None:
        _str(value, where)


def _space(value, where):
    if value not in SPACES:
        raise RecordedConfigError(f"{where}={value!r}: expected one of {list(SPACES)}")


def _number(value, where):
    if not _is_number(value) or not math.isfinite(value):
        raise RecordedConfigError(f"{where}={value!r}: expected a finite number")


def _opt_number(value, where):
    if value is not None:
        _number(value, where)


def _int(value, where, low: int = 0):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RecordedConfigError(f"{where}={value!r}: expected an integer >= {low}")


def _opt_int(value, where):
    if value is not None:
        _int(value, where)


def _bool(value, where):
    if not isinstance(value, bool):
        raise RecordedConfigError(f"{where}={value!r}: expected true or false")


def _classes(value, where):
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise RecordedConfigError(f"{where}={value!r}: expected null, a class index or a list")


def _regressor(value, where):
    if value is None:
        return
    if not isinstance(value, Mapping) or set(value) - {"path", "factors"} or "path" not in value:
        raise RecordedConfigError(f"{where}={value!r}: expected {{path: <file>, factors: ...}}")
    _str(value["path"], f"{where}.path")
    factors = value.get("factors")
    if factors is not None and not isinstance(factors, str) and not (
            isinstance(factors, list) and all(isinstance(f, str) for f in factors)):
        raise RecordedConfigError(f"{where}.factors={factors!r}: expected null, a name or a "
                                  "list of names")


def _pair(value, where):
    if not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise RecordedConfigError(f"{where}={value!r}: expected [low, high]")


def _names(value, where):
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise RecordedConfigError(f"{where}={value!r}: expected a list of names")


def _sizes(value, where):
    if value is not None and not (isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise RecordedConfigError(f"{where}={value!r}: expected null or a list of positive sizes")


def _mapping(value, where):
    if value is not None and not isinstance(value, Mapping):
        raise RecordedConfigError(f"{where}={value!r}: expected a mapping")


_VIEW = {"name": _opt_str, "space": _space, "truncation_psi": _number,
         "truncation_cutoff": _opt_int, "regressor": _regressor}
_LOAD = {**_VIEW, "path": _str, "truncation": _opt_number, "classes": _classes}
_RANDOM = {**_VIEW, "architecture": _str, "init_seed": _int}
_ADAPTER = {"module": _mapping, "latent_dim": lambda v, w: _int(v, w, 1),
            "resolution": lambda v, w: _int(v, w, 1), "output_range": _pair,
            "num_classes": _opt_int, "weights": _opt_str, "weights_key": _opt_str,
            "call": _opt_str, "call_kwargs": _mapping, "input_shape": _sizes, "projection": _opt_str,
            "feature_layers": _names, "bounded": _bool, **_VIEW}


def _loaders() -> dict[str, tuple[Callable, dict]]:
    from generators import load_generator, random_generator
    from generators.adapter import ModuleGenerator

    return {"generators.load_generator": (load_generator, _LOAD),
            "generators.random_generator": (random_generator, _RANDOM),
            ADAPTER: (ModuleGenerator, _ADAPTER)}


def _architecture_options(architecture: str) -> dict[str, Callable]:
    """The keyword arguments ``random_generator`` passes on to the architecture's class: plain
    numbers, strings and lists of numbers (its widths and sizes)."""
    from generators import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise RecordedConfigError(f"architecture={architecture!r}: known: {sorted(ARCHITECTURES)}")
    params = inspect.signature(ARCHITECTURES[architecture][0].__init__).parameters

    def option(value, where):
        # StyleGAN3's ``geometry`` is a flat mapping of numbers (its hyperparameters); no other
        # option takes a mapping
        flat = isinstance(value, Mapping) and where.endswith(".geometry") and all(
            isinstance(k, str) and (_is_number(v) or isinstance(v, bool)) for k, v in value.items())
        if isinstance(value, Mapping) and not flat:
            raise RecordedConfigError(f"{where}: a mapping, expected a number, name or list")

    return {name: option for name in params if name not in ("self", "name")}


def own_code(config: Any) -> list[str]:
    """The classes of the user's own code a generator config builds: an adapter subclass named
    as ``_target_`` and the network named as ``module._target_`` (none for the project's
    loaders)."""
    if not isinstance(config, Mapping):
        return []
    named = []
    target = config.get("_target_")
    if isinstance(target, str) and target not in ("generators.load_generator",
                                                  "generators.random_generator", ADAPTER):
        named.append(target)
    module = config.get("module")
    if isinstance(module, Mapping) and isinstance(module.get("_target_"), str):
        named.append(module["_target_"])
    return named


def _trusted_adapter(target: str) -> Callable:
    """A subclass of the adapter that the user named as trusted (their own code)."""
    from hydra.utils import get_class

    from generators.adapter import ModuleGenerator

    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - any failure to find it is the same mistake
        raise RecordedConfigError(f"trusted class {target!r} cannot be imported ({err}): is its "
                                  "folder on PYTHONPATH?") from None
    if not (isinstance(cls, type) and issubclass(cls, ModuleGenerator)):
        raise RecordedConfigError(f"{target!r} is not a subclass of {ADAPTER}: only the "
                                  "project's loaders and adapters rebuild a recorded generator")
    return cls


def rebuild_generator(record: Any, where: str, trusted: Sequence[str] = ()):
    """The generator ``record`` (a recorded generator config, read from ``where``) describes,
    built through the project's own loaders with checked plain values; a
    ``RecordedConfigError`` (one line, naming ``where`` and the offending entry) for anything
    else. ``trusted``: the classes of the user's own networks the user named on the command line
    (an adapter record naming another is refused)."""
    if not isinstance(record, Mapping):
        raise RecordedConfigError(f"{where}: the recorded generator config is a "
                                  f"{type(record).__name__}, not a mapping")
    record = dict(record)
    target = record.pop("_target_", None)
    loaders = _loaders()
    if target not in loaders and target not in trusted:
        raise RecordedConfigError(
            f"{where}: the recorded generator config names _target_={target!r}, which is not one "
            f"of the project's loaders ({', '.join(loaders)}); a shared file never names code "
            "that runs. Pass generator=<your config> generator_from_run=false to choose the "
            "generator yourself")
    build, checks = loaders[target] if target in loaders else (_trusted_adapter(target), _ADAPTER)
    module = None
    if checks is _ADAPTER:
        if record.pop("_recursive_", False) is not False:
            raise RecordedConfigError(f"{where}: the adapter's record must have _recursive_: false")
        module = record.pop("module", None)
        if not isinstance(module, Mapping) or not isinstance(module.get("_target_"), str):
            raise RecordedConfigError(f"{where}: the adapter's record names no module._target_")
        module = dict(module)
        name = module.pop("_target_")
        if name not in trusted:
            raise RecordedConfigError(
                f"{where} records your own network {name!r}, and a shared file never names code "
                f"that runs: pass trusted_modules=[{name}] if you trust that class (your code, "
                "on PYTHONPATH), or generator=<your config> generator_from_run=false")
        _plain_data(module, f"{where}: generator.module")
        module["_target_"] = name
    elif target == "generators.random_generator":
        checks = {**checks, **_architecture_options(record.get("architecture", "dcgan"))}
    _plain_data(record, f"{where}: generator")
    unknown = sorted(set(record) - set(checks))
    if unknown:
        raise RecordedConfigError(f"{where}: the recorded config of {target} holds unknown "
                                  f"options {unknown}; known: {sorted(checks)}")
    for key, value in record.items():
        checks[key](value, f"{where}: generator.{key}")
    if module is not None:
        record["module"] = module
    return build(**record)


# ---- the scripts' entry: the generator of a directions file ---------------------------
def command_line_generator() -> bool:
    """True when this job's command line chose the generator (``generator=...`` or an option
    under ``generator.``): then that config is the user's own, not a file's."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    overrides = HydraConfig.get().overrides.task
    return any(o.lstrip("+~").startswith(("generator=", "generator.")) for o in overrides)


def trusted_code(generator_cfg: DictConfig | None, trusted_modules=None) -> list[str]:
    """The classes of the user's own code a recorded generator config may build: those named in
    ``trusted_modules=[...]``, and those of the generator config chosen on the command line."""
    from generators import plain

    named = [str(t) for t in (plain(trusted_modules) or [])]
    if generator_cfg is not None and command_line_generator():
        named += own_code(OmegaConf.to_container(generator_cfg, resolve=False))
    return named


def recorded_generator(directions_path: str | Path, recorded: dict | None
                       ) -> tuple[dict | None, str]:
    """The generator config recorded for a directions file, as data, and where it was read: the
    ``generator`` block of its run's config.yaml (read as YAML, interpolations unresolved),
    else the file's own record (``generator_source``); ``(None, ...)`` when neither exists."""
    config_path = Path(directions_path).parent / "config.yaml"
    if config_path.is_file():
        try:
            config = OmegaConf.load(config_path)
        except Exception as err:  # noqa: BLE001 - any unreadable YAML is the same mistake
            raise UserError(f"{config_path} is not a readable run config ({type(err).__name__}); "
                             "pass generator_from_run=false and choose the generator") from None
        if isinstance(config, DictConfig) and "generator" in config:
            return OmegaConf.to_container(config.generator, resolve=False), str(config_path)
    if recorded:
        return recorded, f"{directions_path} (its recorded generator)"
    return None, ""


def load_run_generator(directions_path: str | Path, generator_cfg: DictConfig, from_run: bool = True,
                       recorded: dict | None = None, device: str | torch.device | None = "cpu",
                       trusted_modules=None):
    """The generator a directions file was made with: its run's config.yaml, else the build
    config the file records (``recorded``: its ``generator_source``), both rebuilt as data
    through the project's loaders (``generators.recorded``); else ``generator_cfg``, the user's
    own config (also when ``from_run`` is false); on ``device`` (see ``resolve_device``).
    ``trusted_modules``: classes of the user's own code a record may build."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if from_run:
        record, where = recorded_generator(directions_path, recorded)
        if record is not None:
            trusted = trusted_code(generator_cfg, trusted_modules)
            return rebuild_generator(record, where, trusted).to(device)
    # config-from-command-line
    return instantiate(generator_cfg).to(device)
