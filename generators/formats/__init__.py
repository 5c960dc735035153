"""Published generator checkpoint formats: recognise a file, then load it with its loader.

``detect_format(path)`` peeks at a file without unpickling anything that could run code:

- a torch file (zip archive, or the legacy stream that starts with torch's magic number) is read
  with ``torch.load(weights_only=True)`` and ``argparse.Namespace`` allowed, then told apart by
  its keys: ``"project"`` (this project's ``latent-directions/gan-weights/v1`` files, written by
  ``generators.pretrain.save_weights``) or ``"rosinality"`` (rosinality/stylegan2-pytorch);
- a plain pickle (``.pkl``: protocol header ``\\x80``) is only scanned opcode by opcode
  (``pickletools``): NVIDIA's persistent network objects make it ``"nvidia-pickle"`` (StyleGAN2
  synthesis: stylegan2-ada-pytorch, or stylegan3's StyleGAN2 configuration) or
  ``"stylegan3-pickle"`` (a StyleGAN3 -T / -R synthesis network);
- a directory holding ``config.json`` and ``pytorch_model.bin`` is ``"biggan"``
  (pytorch-pretrained-biggan, generators/formats/biggan.py).

``load_checkpoint(path, format=None, **view)`` dispatches to ``LOADERS[format]``.
"""
from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any, Callable

from common.errors import MissingFile, UserError
from common.pickles import scan_pickle, scan_torch_pickle  # noqa: F401 - re-exported
from generators.formats.biggan import CONFIG_NAME, MARKER_KEY, WEIGHTS_NAME, is_biggan_dir, load_biggan
from generators.formats.rosinality import (
    UnsafeCheckpointError,
    load_rosinality,
    read_rosinality,
    safe_torch_load,
    stylegan2_config_from_state,
    stylegan2_discriminator_config_from_state,
)

#: What ``detect_format`` can return, and what each name means.
FORMATS = {
    "project": "this project's weights file (latent-directions/gan-weights/v1, generators.load_generator)",
    "rosinality": "a rosinality/stylegan2-pytorch checkpoint (.pt from its train.py or convert_weight.py)",
    "nvidia-pickle": "an NVIDIA network pickle with a StyleGAN2 synthesis (stylegan2-ada-pytorch, "
                     "stylegan3 --cfg=stylegan2)",
    "stylegan3-pickle": "an NVIDIA network pickle with a StyleGAN3 (-T / -R) synthesis",
    "biggan": "a pytorch-pretrained-biggan directory (config.json + pytorch_model.bin: BigGAN-deep)",
}

# The torch file of the legacy (non-zip) serialisation starts with this pickled magic number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_NVIDIA_PERSISTENT = "torch_utils.persistence._reconstruct_persistent_obj"


def _supported() -> str:
    return "; ".join(f"{k}: {v}" for k, v in FORMATS.items())


def _is_torch_legacy(head: dict) -> bool:
    first = head.get("first")
    return bool(first) and first[0] in ("LONG1", "LONG4", "INT", "LONG") and first[1] == _TORCH_LEGACY_MAGIC


def _found_generator(info: dict) -> bool:
    return any(cls == "Generator" and src for cls, src in info["objects"])


def _classify_nvidia(path: Path, info: dict | None = None) -> str:
    """``nvidia-pickle`` or ``stylegan3-pickle`` from the opcodes of a plain pickle (the
    module source of its first ``Generator``), else a ValueError saying what it references."""
    if info is None:
        with open(path, "rb") as handle:
            try:
                info = scan_pickle(handle, stop=_found_generator)
            except Exception as err:  # noqa: BLE001 - a broken stream is just not a known format
                raise UserError(f"{path} starts like a pickle but is not a readable one ({err}). "
                                 f"Supported formats: {_supported()}") from None
    if _NVIDIA_PERSISTENT not in info["globals"]:
        found = sorted(set(info["globals"]))[:12]
        hint = (" (an old TensorFlow StyleGAN pickle: convert it with stylegan2-ada-pytorch's "
                "legacy.py first)" if any(g.startswith("dnnlib.tflib") for g in found) else "")
        raise UserError(f"{path} is a plain pickle but not an NVIDIA network pickle: it references "
                         f"{found or 'no globals'}{hint}. Supported formats: {_supported()}")
    sources = [src for cls, src in info["objects"] if cls == "Generator" and src]
    if sources and "class SynthesisInput" in sources[0]:
        return "stylegan3-pickle"
    return "nvidia-pickle"


def detect_format(path: str | Path) -> str:
    """The format of a generator checkpoint: ``"project"``, ``"rosinality"``,
    ``"nvidia-pickle"``, ``"stylegan3-pickle"`` or (a directory) ``"biggan"`` (see ``FORMATS``). Nothing in the file is
    executed: torch files are read with ``weights_only=True``, plain pickles only scanned.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: a torch file that references other Python globals (not read).
        ValueError: anything else, saying what was found and which formats are supported.
    """
    path = Path(path)
    if is_biggan_dir(path):
        return "biggan"
    if path.is_dir():
        present = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if (path / n).is_file()]
        if present:  # half a BigGAN directory: say what is missing
            missing = sorted({CONFIG_NAME, WEIGHTS_NAME} - set(present))
            raise MissingFile(f"{path} holds {present[0]} but not {missing[0]}: a "
                                    f"pytorch-pretrained-biggan directory needs both")
        raise UserError(f"{path} is a directory, expected a checkpoint file (or a BigGAN "
                         f"directory with {CONFIG_NAME} and {WEIGHTS_NAME}). Supported formats: "
                         f"{_supported()}")
    if not path.is_file():
        raise MissingFile(f"checkpoint not found: {path}")
    with open(path, "rb") as handle:
        magic = handle.read(16)
    legacy_torch = False
    if not zipfile.is_zipfile(path):
        if not magic.startswith(b"\x80"):  # protocols 0 and 1 have no header: try the opcodes
            try:
                with open(path, "rb") as handle:
                    info = scan_pickle(handle, stop=_found_generator)
            except Exception:  # noqa: BLE001 - not a pickle at all
                raise UserError(f"{path} is neither a torch file (zip) nor a pickle: it starts "
                                 f"with {magic[:8]!r}. Supported formats: {_supported()}") from None
            return _classify_nvidia(path, info)
        with open(path, "rb") as handle:
            try:
                legacy_torch = _is_torch_legacy(_head(handle))
            except Exception:  # noqa: BLE001
                legacy_torch = False
        if not legacy_torch:
            return _classify_nvidia(path)
    blob = safe_torch_load(path)
    if isinstance(blob, dict):
        from generators.weights import WEIGHTS_FORMAT

        if blob.get("format") == WEIGHTS_FORMAT:
            return "project"
        for key in ("g_ema", "g"):
            state = blob.get(key)
            if isinstance(state, dict) and "style.1.weight" in state:
                return "rosinality"
    what = (f"a dict with keys {sorted(map(str, blob))[:20]}" if isinstance(blob, dict)
            else f"a {type(blob).__name__}")
    hint = ""
    if isinstance(blob, dict) and ("state_dict" in blob or "pytorch-lightning_version" in blob):
        hint = (" (a Lightning checkpoint: use the generator.pt of that run, or export one with "
                "`python -m generators.pretrain <ckpt> <out.pt>`)")
    elif isinstance(blob, dict) and MARKER_KEY in blob:
        hint = (f" (a pytorch-pretrained-biggan {WEIGHTS_NAME}: pass the directory that holds it "
                f"and its {CONFIG_NAME})")
    elif isinstance(blob, dict) and "style.1.weight" in blob:
        hint = (" (a bare StyleGAN2 generator state: save it as {'g_ema': state} to load it "
                "as a rosinality checkpoint)")
    raise UserError(f"{path} is a torch file holding {what}, not a known generator checkpoint"
                     f"{hint}. Supported formats: {_supported()}")


def _head(handle) -> dict:
    """The first data opcode of a pickle stream (legacy torch files start with a magic number)."""
    info: dict[str, Any] = {"first": None}
    for op, arg, _ in pickletools.genops(handle):
        if op.name != "PROTO":
            info["first"] = (op.name, arg)
            break
    return info


# ---- loaders by format name ----------------------------------------------------------------------
def _load_project(path: str | Path, **kwargs) -> Any:
    from generators import load_generator

    return load_generator(path, **kwargs)


#: Loaders by format name: ``loader(path, space=..., truncation_psi=..., truncation_cutoff=...,
#: name=..., **format_specific)`` returning a frozen ``Generator``.
LOADERS: dict[str, Callable[..., Any]] = {
    "project": _load_project,
    "rosinality": load_rosinality,
    "biggan": load_biggan,
}

# >>> NVIDIA loader registration point >>>
# generators/formats/nvidia.py (written separately) provides ``load_nvidia_pickle``; it is
# registered for both NVIDIA formats when that module exists (it refuses what it cannot build).
try:
    from generators.formats.nvidia import load_nvidia_pickle
except ModuleNotFoundError as _err:  # only the module's absence is tolerated, not its bugs
    if _err.name != "generators.formats.nvidia":
        raise
else:
    LOADERS["nvidia-pickle"] = load_nvidia_pickle
    LOADERS["stylegan3-pickle"] = load_nvidia_pickle
# <<< NVIDIA loader registration point <<<


def load_checkpoint(path: str | Path, format: str | None = None, **kwargs) -> Any:  # noqa: A002
    """A frozen generator from any supported checkpoint: ``format`` detected when not given
    (and checked when given); ``kwargs`` go to that format's loader (``space``,
    ``truncation_psi``, ``truncation_cutoff``, ``name``, and e.g. ``lr_mlp`` for rosinality)."""
    detected = detect_format(path)
    if format is not None and format != detected:
        raise UserError(f"{path} was given as format {format!r} but is {detected!r} "
                         f"({FORMATS[detected]})")
    if detected not in LOADERS:
        raise UserError(f"{path} is {detected!r} ({FORMATS[detected]}), but no loader for it is "
                         f"installed (generators/formats/nvidia.py); loaders: {sorted(LOADERS)}")
    return LOADERS[detected](path, **kwargs)


__all__ = ["FORMATS", "LOADERS", "detect_format", "load_checkpoint", "scan_pickle",
           "scan_torch_pickle", "load_rosinality", "read_rosinality", "safe_torch_load",
           "stylegan2_config_from_state", "stylegan2_discriminator_config_from_state",
           "UnsafeCheckpointError", "load_biggan", "is_biggan_dir"]
