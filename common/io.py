"""Small I/O helpers shared by every package: atomic writes, so that a run that fails half way
never leaves a truncated checkpoint, directions file or metrics file behind."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from common.errors import MissingFile, UserError
from common.pickles import UnreadableFile, load_weights_only

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: str | Path, write) -> Path:
    """``write(handle)`` into a temporary file in the same folder, then rename over ``path``."""
    return _atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return _atomic_write(path, lambda handle: handle.write(text.encode()))


def resolve_shipped(path: str | Path, folder: Path) -> Path:
    """``path`` as given when it is a file, else the file of that name shipped in ``folder``."""
    path = Path(path)
    return folder / path if not path.is_file() and (folder / path).is_file() else path


def read_weights_file(path: str | Path, folder: Path, what: str, how_to_make: str,
                      map_location: str = "cpu") -> tuple[Path, Any]:
    """``(path, contents)`` of a weights file given as a path or as a name shipped in
    ``folder``; a clear error when it is missing or unreadable (``what``: e.g. "generator";
    ``how_to_make``: the command that writes one)."""
    path = resolve_shipped(path, folder)
    if path.is_dir():
        raise MissingFile(f"{what} weights: {path} is a directory; pass the weights file "
                                f"itself (e.g. {path}/{what}.pt)")
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in folder.glob("*.pt"))) or "none"
        raise MissingFile(f"{what} weights not found: {path}. Shipped weights in {folder}: "
                                f"{shipped}; or {how_to_make}")
    try:
        return path, load_weights_only(path, map_location)
    except UnreadableFile as err:
        raise UserError(f"{err}; expected a {what} weights file") from None


def check_weights_blob(blob: Any, path: str | Path, file_format: str, what: str) -> dict:
    """A project weights file's contents, refused unless it holds exactly ``format`` (equal to
    ``file_format``), ``config``, ``state_dict`` and ``info`` (``what``: e.g. "regressor")."""
    expected = {"format", "config", "state_dict", "info"}
    keys = set(blob) if isinstance(blob, dict) else set()
    if keys != expected or blob.get("format") != file_format:
        raise UserError(f"{path} is not a {what} weights file ({file_format}): missing keys "
                        f"{sorted(expected - keys)}, unexpected keys {sorted(keys - expected)}")
    return blob


def file_sha256(path: str | Path) -> str:
    """Hash of a file's bytes: the identity of weights read from it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
