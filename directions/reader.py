"""What a directions file may hold, and reading one without running anything in it.

A directions file (format ``DIRECTIONS_FORMAT``, v2) is a dict ``format, kind, config,
state_dict, meta`` holding only tensors and plain data: ``encode`` makes the metadata plain and
checks that the bytes read back with ``torch.load(weights_only=True)`` before anything is
written; ``read`` loads a file that way (``common.pickles.load_weights_only``: a file that
references other Python globals is a ``RefusedPickle``, told apart by type, never by torch's
wording) and checks its keys and format. Version 1 files (the same keys; no ``layers`` in the
config, no ``generator_source`` in meta) are read too; ``Directions.load`` upgrades them.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.errors import MissingFile, UserError
from common.pickles import RefusedPickle, UnreadableFile, load_weights_only

DIRECTIONS_FORMAT = "latent-directions/directions/v2"
DIRECTIONS_FORMAT_V1 = "latent-directions/directions/v1"
READABLE_FORMATS = (DIRECTIONS_FORMAT_V1, DIRECTIONS_FORMAT)
KEYS = {"format", "kind", "config", "state_dict", "meta"}
_SCALARS = (str, int, float, bool, complex, bytes, type(None))
# Meta entries whose odd values are kept as their repr (configs); elsewhere they are refused.
_LENIENT_META = ("config", "generator_source")


def encode(kind: str, config: Mapping, state_dict: Mapping, meta: Mapping, path: str | Path) -> bytes:
    """The bytes of a directions file: metadata made plain (numpy numbers, paths and configs
    converted; other objects kept as their repr under ``config`` and ``generator_source``,
    refused elsewhere), checked to read back with ``torch.load(weights_only=True)``."""
    plain_meta = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            _refuse(key, "a meta key")
        plain_meta[key] = _plain(value, f"meta[{key!r}]", lenient=key in _LENIENT_META)
    payload = {
        "format": DIRECTIONS_FORMAT,
        "kind": kind,
        "config": _plain(config, "the direction config", lenient=False),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": plain_meta,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    try:
        load_weights_only(data)
    except UserError as err:  # never write a file that cannot be read back
        raise UserError(f"Directions.save refuses to write {path}: it would not load with "
                        f"torch.load(weights_only=True) ({err})") from None
    return data


def read(path: str | Path, map_location: Any = "cpu") -> dict:
    """The checked contents of a directions file (v2 or v1), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"directions file not found: {path} (a run writes "
                          "outputs/<run_name>/directions.pt at the end of training)")
    try:
        blob = load_weights_only(path, map_location)
    except RefusedPickle as err:
        raise RefusedPickle(
            f"{path}: Directions.load refuses to unpickle this file: it holds objects other than "
            f"tensors and plain data (the globals {err.found[:8]}), and unpickling those may run "
            "code; directions files hold only tensors and plain data. Do not load it elsewhere "
            "either unless you trust its origin", err.found) from None
    except UnreadableFile as err:
        raise UnreadableFile(f"{err}; expected a directions file ({DIRECTIONS_FORMAT})") from None
    keys = set(blob) if isinstance(blob, dict) else set()
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt not in READABLE_FORMATS or keys != KEYS:
        if isinstance(fmt, str) and fmt.startswith("latent-directions/directions/") \
                and fmt not in READABLE_FORMATS:
            raise UserError(f"{path} is a directions file of format {fmt!r}, which this version "
                            f"of the project does not read (it reads {list(READABLE_FORMATS)}): "
                            "update the project")
        raise UserError(f"{path} is not a directions file ({DIRECTIONS_FORMAT}): missing "
                        f"keys {sorted(KEYS - keys)}, unexpected keys {sorted(keys - KEYS)}")
    return blob


def _plain(value: Any, where: str, lenient: bool) -> Any:
    """``value`` as tensors and plain data only (what ``torch.load(weights_only=True)`` reads):
    numpy values become Python numbers or tensors, paths strings, mappings dicts, sequences
    lists; anything else is its ``repr`` when ``lenient``, else refused."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (torch.Size, torch.dtype)):
        return value
    if type(value).__module__ == "numpy":
        import numpy as np  # only where numpy values occur

        if isinstance(value, np.generic):
            return _plain(value.item(), where, lenient)
        if isinstance(value, np.ndarray) and value.dtype != object:
            return torch.as_tensor(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.device):
        return str(value)
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        try:
            value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable interpolation: keep it as written
            value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            plain_key = _plain(key, f"{where}[{key!r}]", lenient)
            if not isinstance(plain_key, (str, int, float, bool, type(None))):
                plain_key = _plain(repr(key), where, lenient) if lenient else \
                    _refuse(key, f"{where} (a key)")
            out[plain_key] = _plain(item, f"{where}[{key!r}]", lenient)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(item, f"{where}[{i}]", lenient) for i, item in enumerate(value)]
        return tuple(items) if type(value) is tuple else items
    if lenient:
        return repr(value)
    return _refuse(value, where)


def _refuse(value: Any, where: str):
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise UserError(
        f"Directions.save refuses to write {where} = {shown}: a {type(value).__name__} would not "
        "load with torch.load(weights_only=True); directions files hold only tensors and plain "
        "data (dict, list, tuple, str, int, float, bool, None). Convert it, or keep it under "
        "meta['config'], where other values are stored as their repr")
