"""Reading torch files and pickles a user passed, without running anything in them.

``load_weights_only(source)`` is ``torch.load(weights_only=True)`` with one difference: what it
cannot read is told apart by exception type, never by torch's wording. ``RefusedPickle`` (the
pickle names Python globals outside the allow-list: unpickling them could run code) lists those
globals, read from the opcodes by ``scan_pickle``; ``UnreadableFile`` is everything else (empty,
truncated, text, not a pickle). Both are ``UserError``s.

``scan_pickle`` reads a pickle opcode by opcode (``pickletools``) and never executes it: the
generator formats use it to recognise NVIDIA's network pickles, and this module to name what a
refused file references.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from common.errors import UserError

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}


# ---- peeking at pickles without unpickling -------------------------------------------------------
def scan_pickle(stream, stop: Callable[[dict], bool] | None = None) -> dict:
    """Read one pickle's opcodes (never executing it) and collect the globals it references
    (``module.name``) and the values of dict string keys that name things NVIDIA stores:
    ``module_src`` / ``class_name`` pairs of persistent objects. ``stop(info)`` ends early.

    Returns ``{"globals": [...], "objects": [(class_name, module_src), ...], "first": arg of
    the first data opcode}``.
    """
    info: dict[str, Any] = {"globals": [], "objects": [], "first": None}
    memo: dict[int, Any] = {}
    last: list[Any] = []  # recent pushed values (strings, else None): enough for STACK_GLOBAL
    pending: str | None = None  # the string key whose value comes next
    module_src: str | None = None
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = last[-1] if last else None
            continue
        if name in ("PROTO", "FRAME"):
            continue
        if info["first"] is None:
            info["first"] = (name, arg)
        value: Any = None
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo.get(int(arg))
        elif name == "GLOBAL":
            info["globals"].append(arg.replace(" ", "."))
        elif name == "STACK_GLOBAL" and len(last) >= 2:
            info["globals"].append(f"{last[-2]}.{last[-1]}")
        elif name == "STOP":
            break
        last = (last + [value])[-4:]
        if pending is not None:  # the value of a key we look for
            if pending == "module_src" and isinstance(value, str):
                module_src = value
            elif pending == "class_name" and isinstance(value, str):
                info["objects"].append((value, module_src))
                if stop is not None and stop(info):
                    break
            pending = None
        elif value in ("module_src", "class_name"):
            pending = value
    return info


def scan_torch_pickle(path: str | Path) -> dict:
    """``scan_pickle`` of the object pickle inside a torch zip file (``<archive>/data.pkl``)."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if not names:
            raise UserError(f"{path} is a zip file without a data.pkl: not a torch file")
        with archive.open(names[0]) as handle:
            return scan_pickle(io.BytesIO(handle.read()))


class UnreadableFile(UserError):
    """A file that is no torch file or pickle this project can read (nothing in it ran)."""


class RefusedPickle(UserError):
    """A pickle that references Python globals outside the allow-list: unpickling would import
    and may call them, so it was not read. ``found`` lists them (read from the opcodes)."""

    def __init__(self, message: str, found: list[str]):
        super().__init__(message)
        self.found = found


def _global_name(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"{obj.__module__}.{obj.__qualname__}"


def _torch_allowed() -> set[str]:
    """The globals torch's weights-only unpickler accepts (its default list and the
    process-wide additions); a prefix rule where torch no longer exposes the list."""
    try:
        from torch import _weights_only_unpickler as unpickler

        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except Exception:  # noqa: BLE001 - a private list: fall back to the prefixes it holds
        return set()


def _pickles_in(data: bytes) -> Iterable[bytes]:
    """The object pickle of a torch zip (``<archive>/data.pkl``), or the bytes themselves (a
    legacy torch file or a plain pickle: several pickles one after another)."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [archive.read(n) for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    return [data]


def globals_named(data: bytes) -> list[str]:
    """Every global the pickle(s) in ``data`` reference (``module.name``), from the opcodes;
    a stream that breaks off ends the list."""
    found: list[str] = []
    for blob in _pickles_in(data):
        stream = io.BytesIO(blob)
        for _ in range(8):  # a legacy torch file: magic, protocol, system info, the object, ...
            if stream.tell() >= len(blob):
                break
            try:
                found += scan_pickle(stream)["globals"]
            except Exception:  # noqa: BLE001 - the rest is no pickle (storages, garbage)
                break
    return found


def refused_globals(data: bytes, allowed: Iterable[Any] = ()) -> list[str]:
    """The globals in ``data`` that torch's weights-only unpickler (with ``allowed`` added)
    refuses, sorted; empty when it names none."""
    torch_allowed = _torch_allowed()
    extra = {_global_name(g) for g in allowed}

    def ok(name: str) -> bool:
        if torch_allowed:
            return name in torch_allowed or name in extra
        return name in extra or name.startswith(("torch.", "collections.OrderedDict", "_codecs.encode"))

    return sorted({g for g in globals_named(data) if not ok(g)})


def load_weights_only(source: str | Path | bytes, map_location: Any = "cpu", *, mmap: bool = False,
                      allowed: Iterable[Any] = (), what: str = "torch file") -> Any:
    """``torch.load(source, weights_only=True)`` with ``allowed`` globals added for this call.

    Raises:
        RefusedPickle: the pickle references other globals (named; nothing was executed).
        UnreadableFile: anything else that is not a readable torch file (``what`` names what
            was expected, in the message).
    """
    import warnings

    allowed = list(allowed)
    data = source if isinstance(source, bytes) else None
    name = "these bytes" if data is not None else str(source)
    handle = io.BytesIO(data) if data is not None else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes would only repeat the error below
            if allowed and hasattr(torch.serialization, "safe_globals"):
                with torch.serialization.safe_globals(allowed):
                    return torch.load(handle, map_location=map_location, weights_only=True, mmap=mmap)
            if allowed:  # torch 2.4: only the process-wide allow-list exists
                torch.serialization.add_safe_globals(allowed)
            return torch.load(handle, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - sorted below by what the file holds, not by wording
        if data is None:
            try:
                data = Path(source).read_bytes()
            except OSError:
                data = b""
        found = refused_globals(data, allowed) if isinstance(err, pickle.UnpicklingError) else []
        if found:
            raise RefusedPickle(
                f"{name} references the Python global(s) {found[:8]}, which unpickling would "
                "import and may call: it may run code, so it was not read. Only tensors and "
                "plain data are accepted; load it yourself only if you trust its origin",
                found) from None
        raise UnreadableFile(f"{name} is not a readable {what} ({_why_unreadable(data, err)})") from None


def _why_unreadable(data: bytes, err: Exception) -> str:
    """What is wrong with bytes torch could not read, said from the bytes where torch's own
    text is only its weights-only boilerplate."""
    if not data:
        return "empty file"
    if data.startswith(b"PK") and not zipfile.is_zipfile(io.BytesIO(data)):
        return "a zip archive cut short or damaged: the end of the file is missing"
    if isinstance(err, pickle.UnpicklingError) and not zipfile.is_zipfile(io.BytesIO(data)):
        try:
            scan_pickle(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - not a pickle at all
            return f"neither a torch zip file nor a pickle: it starts with {data[:12]!r}"
        return "a pickle that is not a torch file"
    return f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
