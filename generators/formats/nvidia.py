"""NVIDIA network pickles (stylegan2-ada-pytorch, and stylegan3 files of its StyleGAN2
configuration) read without running their code, and loaded into the project's
``StyleGAN2Generator`` (and ``StyleGAN2Discriminator``).

An NVIDIA ``network-snapshot-*.pkl`` is a pickled dict ``G``, ``D``, ``G_ema``, ``augment_pipe``,
``training_set_kwargs``. Each network is written as a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the full source
of the defining module (``module_src``), which NVIDIA's loader executes. Here a restricted
unpickler resolves only the handful of globals such files reference (see ``ALLOWED_GLOBALS``) to
inert stand-ins: every network becomes a ``PersistentObject`` holding its class name, its source
as a string that is never executed, and its state (``_parameters``, ``_buffers``, ``_modules``,
``_init_kwargs``, plain attributes). Any other global (``os.system``, ``builtins.eval``, ...) is
refused when the unpickler meets it, before it could be called. Neither ``dnnlib`` nor
``torch_utils`` is needed.

``load_nvidia_pickle`` maps ``G_ema`` onto ``generators.stylegan2.StyleGAN2Generator``: every size
comes from the tensors and the stored constructor arguments, the truncation centre is the stored
``mapping.w_avg`` (not re-estimated), the fixed noise is the stored ``noise_const`` buffers
(NVIDIA's ``noise_mode="const"``), a conditional network (``c_dim > 0``) gives a conditional
generator over ``c_dim`` classes (one-hot labels, as NVIDIA's labelled datasets use).

Precision: NVIDIA networks run their highest-resolution blocks (``num_fp16_res``) in float16 on a
GPU; here every layer runs in float32 (as NVIDIA's own ``force_fp32=True`` and its CPU path do).
Outputs match NVIDIA's float32 path to float rounding and its float16 GPU path to about 1e-2.

Supported: skip-architecture StyleGAN2 generators with RGB output (the configurations of
stylegan2-ada-pytorch and stylegan3's ``--cfg=stylegan2``); StyleGAN3 (-T / -R) generators,
mapped onto ``generators.stylegan3.StyleGAN3Generator`` by generators/formats/nvidia_stylegan3.py;
unconditional residual discriminators. Refused with a message: other architectures, other
channel counts, TensorFlow pickles.
"""
from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import MissingFile, UserError
from generators.base import file_sha256
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, make_kernel
from generators.stylegan3 import StyleGAN3Generator

ADAPTER = "stylegan2-nvidia"
SUPPORTED = ("NVIDIA StyleGAN2 pickles: stylegan2-ada-pytorch network snapshots and stylegan3 "
             "snapshots trained with --cfg=stylegan2 (skip-architecture generator, RGB); "
             "rosinality/stylegan2-pytorch checkpoints load through generators/formats/rosinality.py")


class NvidiaPickleError(UserError):
    """The file is not an NVIDIA StyleGAN2 pickle this loader can read (the message says why)."""


class ForbiddenGlobalError(NvidiaPickleError, pickle.UnpicklingError):
    """The pickle references a Python global outside the allow-list: unpickling it normally
    could run arbitrary code, so reading stopped there (nothing of it was called)."""


# ---- stand-ins for the globals an NVIDIA pickle references ---------------------------------
class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PersistentObject:
    """A network object of an NVIDIA pickle as data (what ``_reconstruct_persistent_obj`` would
    have instantiated by executing ``module_src``).

    Attributes:
        class_name: the class in the defining module (``Generator``, ``SynthesisLayer``, ...).
        module_src: the defining module's source, kept as text and never executed.
        state: the object's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, attributes).
        version: the persistence format version (6 in published files).
        meta: the whole record as unpickled.
    """

    def __init__(self, meta: Any) -> None:
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise NvidiaPickleError("malformed persistent object: expected a dict meta with a "
                                    f"dict state, got {type(meta).__name__}")
        if meta.get("type", "class") != "class":
            raise NvidiaPickleError(f"unknown persistent object type {meta.get('type')!r}")
        self.meta = meta
        self.class_name: str = str(meta.get("class_name"))
        self.module_src: str | None = meta.get("module_src")
        self.state: dict = meta["state"]
        self.version = meta.get("version")

    def __repr__(self) -> str:
        return (f"<NVIDIA {self.class_name}: {len(self.named_tensors())} tensors, "
                f"modules {list(self.children())}>")

    def get(self, key: str, default: Any = None) -> Any:
        """An attribute of the original object (``resolution``, ``conv_clamp``, ...)."""
        return self.state.get(key, default)

    @property
    def init_kwargs(self) -> dict:
        """The constructor's keyword arguments (``_init_kwargs``), ``{}`` if not stored."""
        kwargs = self.state.get("_init_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def children(self) -> dict[str, "PersistentObject"]:
        modules = self.state.get("_modules") or {}
        return {k: v for k, v in modules.items() if isinstance(v, PersistentObject)}

    def module(self, path: str) -> "PersistentObject | None":
        """The sub-module at a dotted path (``"synthesis.b8.conv0"``), None if absent."""
        obj: PersistentObject | None = self
        for part in path.split(".") if path else []:
            obj = obj.children().get(part) if obj is not None else None
        return obj

    def named_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer of the tree, by dotted name (as ``state_dict`` would)."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for key, value in (self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor):
                    out[prefix + key] = value
        for key, child in self.children().items():
            out.update(child.named_tensors(f"{prefix}{key}."))
        return out

    def walk(self, prefix: str = ""):
        """``(dotted name, object)`` for this object and every sub-module."""
        yield prefix, self
        for key, child in self.children().items():
            yield from child.walk(f"{prefix}.{key}" if prefix else key)


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    return PersistentObject(meta)


def _load_from_bytes(payload: Any) -> Any:
    if not isinstance(payload, (bytes, bytearray)):
        raise NvidiaPickleError(f"storage payload must be bytes, got {type(payload).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(bytes(payload)), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any,
                       requires_grad: bool = False, backward_hooks: Any = None,
                       metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise NvidiaPickleError(f"tensor storage of unexpected type {type(storage).__name__}")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return tensor.set_(storage._untyped_storage, int(storage_offset),
                       tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise NvidiaPickleError(f"parameter data of unexpected type {type(data).__name__}")
    return data


try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise NvidiaPickleError(f"numpy array of unexpected type {subtype!r}")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise NvidiaPickleError(f"numpy scalar of unexpected dtype {dtype!r}")
    return _multiarray.scalar(dtype, bytes(data))


_NUMPY = {"scalar": _np_scalar, "_reconstruct": _np_reconstruct}

#: Every global an NVIDIA pickle may reference, and what it resolves to here. ``builtins.set``
#: and ``frozenset`` are how pickle protocol 3 (the default of Python 3.7, which the ADA code
#: used) writes sets such as ``_non_persistent_buffers_set``; they only build a set from a list.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{(f"numpy.{core}.multiarray", name): fn for core in ("core", "_core") for name, fn in _NUMPY.items()},
}


class NvidiaUnpickler(pickle.Unpickler):
    """Resolves exactly ``ALLOWED_GLOBALS``; any other global raises ``ForbiddenGlobalError``
    at the point the pickle names it, before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get(({"__builtin__": "builtins"}.get(module, module), name))
        if found is not None:
            return found
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = (" This looks like a TensorFlow StyleGAN pickle: convert it to a PyTorch "
                    "snapshot first (NVIDIA's legacy.py in stylegan2-ada-pytorch).")
        allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
        raise ForbiddenGlobalError(
            f"refusing the pickle global {module}.{name}: an NVIDIA network pickle references only "
            f"{allowed}. Unpickling other globals can run arbitrary code, so the file was not "
            f"read (nothing in it was executed).{hint}")

    def persistent_load(self, pid: Any) -> Any:
        raise NvidiaPickleError("unexpected persistent id in the pickle (a torch.save file?)")


# ---- reading -------------------------------------------------------------------------------
def read_nvidia_pickle(path: str | Path) -> dict[str, Any]:
    """The networks of an NVIDIA pickle as data: ``{"G": PersistentObject, "D": ...,
    "G_ema": ..., "augment_pipe": ... or None, "training_set_kwargs": {...}}``.

    Nothing in the file is executed: ``module_src`` is kept as text.

    Raises:
        FileNotFoundError: no such file.
        ForbiddenGlobalError: the pickle references a global outside ``ALLOWED_GLOBALS``.
        NvidiaPickleError: not a readable NVIDIA pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"NVIDIA pickle not found: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) == b"PK\x03\x04":
            raise NvidiaPickleError(
                f"{path} is a zip archive (a torch.save file, e.g. a rosinality checkpoint or a "
                f"generator.pt), not an NVIDIA network pickle. Supported here: {SUPPORTED}")
        handle.seek(0)
        try:
            blob = NvidiaUnpickler(handle).load()
        except ForbiddenGlobalError as err:
            raise ForbiddenGlobalError(f"{path}: {err}") from None
        except NvidiaPickleError as err:
            raise NvidiaPickleError(f"{path}: {err}") from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure: one clear message
            raise NvidiaPickleError(f"{path} is not a readable NVIDIA network pickle "
                                    f"({type(err).__name__}: {err})") from err
    if not isinstance(blob, dict):
        raise NvidiaPickleError(f"{path} holds a {type(blob).__name__}, expected the dict of "
                                "networks of an NVIDIA snapshot (G, D, G_ema, ...)")
    return dict(blob)


def load_nvidia_pickle(path: str | Path, space: str = "w", truncation_psi: float = 1.0,
                       truncation_cutoff: int | None = None, name: str | None = None,
                       discriminator: bool = False) -> StyleGAN2Generator | StyleGAN3Generator:
    """A frozen ``StyleGAN2Generator`` (or ``StyleGAN3Generator``) from the ``G_ema`` of an
    NVIDIA pickle.

    Args:
        path: a ``network-snapshot-*.pkl`` (or a published ``ffhq.pkl``-style file).
        space, truncation_psi, truncation_cutoff: the view (see ``generators.base.Generator``);
            truncation uses the stored ``mapping.w_avg``.
        name: identifier recorded in checkpoints; the file's stem by default.
        discriminator: also map ``D`` onto ``StyleGAN2Discriminator`` (unconditional residual
            discriminators), kept as ``generator.discriminator``.

    Raises:
        NvidiaPickleError: no ``G_ema``, or a network this loader does not support (another
            architecture, not RGB, a StyleGAN3 layout it does not cover);
            ``ForbiddenGlobalError`` for unsafe files.
        NotImplementedError: ``discriminator=True`` and ``D`` cannot be mapped.
    """
    path = Path(path)
    networks = read_nvidia_pickle(path)
    g_ema = networks.get("G_ema")
    if not isinstance(g_ema, PersistentObject):
        held = {k: (v.class_name if isinstance(v, PersistentObject) else type(v).__name__)
                for k, v in networks.items()}
        raise NvidiaPickleError(
            f"{path} has no G_ema network (it holds {held}); the generator is read from G_ema, "
            "the exponential moving average NVIDIA snapshots store for generation")
    if stylegan3_signs(g_ema):  # StyleGAN3 (-T / -R) synthesis
        from generators.formats.nvidia_stylegan3 import ADAPTER as SG3_ADAPTER
        from generators.formats.nvidia_stylegan3 import convert_stylegan3

        generator, adapter = convert_stylegan3(g_ema, name=name or path.stem, where=str(path)), SG3_ADAPTER
    else:
        generator, adapter = convert_generator(g_ema, name=name or path.stem, where=str(path)), ADAPTER
    generator.sha256 = file_sha256(path)
    generator.adapter = adapter
    generator.source = {"format": "nvidia-pickle", "path": str(path)}
    if discriminator:
        d_net = networks.get("D")
        if not isinstance(d_net, PersistentObject):
            raise NotImplementedError(f"{path} holds no discriminator D (keys {sorted(networks)})")
        disc = convert_discriminator(d_net, where=str(path))
        for p in disc.parameters():
            p.requires_grad_(False)
        # Kept outside the module tree: it is not part of the generator's weights.
        object.__setattr__(generator, "discriminator", disc.eval())
    generator.set_view(space, truncation_psi, truncation_cutoff)
    return generator.freeze()


# ---- G_ema -> StyleGAN2Generator -----------------------------------------------------------
_STYLEGAN3_CLASSES = {"SynthesisInput"}
_STYLEGAN3_LAYER = re.compile(r"L\d+_\d+_\d+")


def stylegan3_signs(net: PersistentObject) -> list[str]:
    """Names in a network that only StyleGAN3 (-T / -R) synthesis has (empty for StyleGAN2)."""
    signs = []
    for name, obj in net.walk():
        leaf = name.rsplit(".", 1)[-1]
        if obj.class_name in _STYLEGAN3_CLASSES or _STYLEGAN3_LAYER.fullmatch(leaf):
            signs.append(name)
    signs += [k for k in net.named_tensors() if k.endswith(("input.freqs", "input.phases"))]
    return list(dict.fromkeys(signs))  # in network order, without repeats


def _need(obj: PersistentObject | None, what: str, where: str) -> PersistentObject:
    if obj is None:
        raise NvidiaPickleError(f"{where}: no {what} in G_ema: not a StyleGAN2 generator this "
                                f"loader knows. Supported: {SUPPORTED}")
    return obj


def _tensor(obj: PersistentObject, key: str, where: str, path: str) -> torch.Tensor:
    t = obj.named_tensors().get(key)
    if t is None:
        raise NvidiaPickleError(f"{where}: G_ema lacks the tensor {path}.{key}")
    return t.detach().to(torch.float32)


class _StateMap:
    """A network's tensors taken one by one under the project's names (``state``); loading
    refuses tensors left over (the file holds something this mapping does not know, the message
    ending with ``supported``) and project parameters left missing. ``fail(why)`` makes the
    exception to raise."""

    def __init__(self, tensors: dict[str, torch.Tensor], fail, supported: str | None = SUPPORTED) -> None:
        self.tensors, self.fail, self.supported = tensors, fail, supported
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise self.fail(f"no tensor {key} in the file")
        self.used.add(key)
        return self.tensors[key].detach().to(torch.float32)

    def load_into(self, module: torch.nn.Module, also_known: tuple[str, ...] = ()) -> None:
        leftover = sorted(k for k in self.tensors if k not in self.used and k not in also_known
                          and not k.endswith("resample_filter"))
        if leftover:
            raise self.fail(f"tensors this loader does not know: {leftover[:8]}"
                            + (f". Supported: {self.supported}" if self.supported else ""))
        try:
            result = module.load_state_dict(self.state, strict=False)
        except RuntimeError as err:
            raise self.fail(f"the tensors do not fit a {type(module).__name__}: {err}") from None
        missing = [k for k in result.missing_keys if not k.endswith(".kernel")]
        if missing or result.unexpected_keys:
            raise self.fail(f"mapping incomplete: missing {missing}, unexpected {result.unexpected_keys}")


def _blur_kernel(filters: dict[str, torch.Tensor], where: str) -> list[float]:
    """The 1-D FIR kernel behind NVIDIA's stored ``resample_filter`` buffers (all equal)."""
    if not filters:
        return [1.0, 3.0, 3.0, 1.0]
    first_key, f = next(iter(filters.items()))
    for key, other in filters.items():
        if other.shape != f.shape or not torch.allclose(other.float(), f.float(), atol=1e-7):
            raise NvidiaPickleError(f"{where}: resample filters differ ({first_key} vs {key})")
    f = f.float()
    k = f if f.ndim == 1 else f.sum(1)
    k = (k / k[0]).tolist() if float(k[0]) != 0 else k.tolist()
    if f.ndim == 2 and not torch.allclose(make_kernel(k), f / f.sum(), atol=1e-6):
        raise NvidiaPickleError(f"{where}: non-separable resample filter {first_key}")
    return [round(v, 6) for v in k]


def read_mapping(g: PersistentObject, where: str) -> dict[str, Any]:
    """The mapping network of an NVIDIA ``Generator`` (StyleGAN2 or StyleGAN3: the same one):
    its ``fc`` layers, ``w_dim``, ``c_dim``, ``z_dim`` and learning-rate multiplier, checked."""
    mapping = _need(g.module("mapping"), "mapping network", where)
    kw = g.init_kwargs
    fcs = sorted((int(k[2:]), v) for k, v in mapping.children().items() if re.fullmatch(r"fc\d+", k))
    if not fcs or [i for i, _ in fcs] != list(range(len(fcs))):
        raise NvidiaPickleError(f"{where}: mapping layers {sorted(mapping.children())} are not fc0..fcN")
    fc_w = [_tensor(v, "weight", where, f"mapping.fc{i}") for i, v in fcs]
    w_dim = fc_w[-1].shape[0]
    if any(w.shape[0] != w_dim for w in fc_w) or any(w.shape[1] != w_dim for w in fc_w[1:]):
        raise NvidiaPickleError(f"{where}: mapping layers of width other than w_dim={w_dim} "
                                f"({[tuple(w.shape) for w in fc_w]}) are not supported")
    for i, v in fcs:
        if v.get("activation", "lrelu") != "lrelu":
            raise NvidiaPickleError(f"{where}: mapping.fc{i} activation {v.get('activation')!r} "
                                    "(only lrelu is supported)")
    embed = mapping.module("embed")
    c_dim = 0
    if embed is not None:
        embed_w = _tensor(embed, "weight", where, "mapping.embed")
        c_dim = embed_w.shape[1]
        if embed_w.shape[0] != w_dim or float(embed.get("bias_gain", 1)) != 1:
            raise NvidiaPickleError(f"{where}: a class embedding of {embed_w.shape[0]} features or a "
                                    f"learning-rate multiplier (w_dim={w_dim}) is not supported")
    z_dim = fc_w[0].shape[1] - (w_dim if c_dim else 0)
    if z_dim <= 0:
        raise NvidiaPickleError(f"{where}: a generator without a z input (z_dim={z_dim}) is not supported")
    for key, found in (("z_dim", z_dim), ("c_dim", c_dim), ("w_dim", w_dim)):
        if key in kw and int(kw[key]) != found:
            raise NvidiaPickleError(f"{where}: {key}={kw[key]} in _init_kwargs but {found} in the tensors")
    lr_default = (kw.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01)
    lr_mlp = float(fcs[0][1].get("bias_gain", lr_default))
    return {"fcs": fcs, "w_dim": w_dim, "c_dim": c_dim, "z_dim": z_dim, "lr_mlp": lr_mlp}


def mapping_state(take, fcs, c_dim: int) -> dict[str, torch.Tensor]:
    """The mapping's tensors under the project's names (``style.<i+1>``, ``embed``)."""
    state = {}
    for i, _ in fcs:
        state[f"style.{i + 1}.weight"], state[f"style.{i + 1}.bias"] = \
            take(f"mapping.fc{i}.weight"), take(f"mapping.fc{i}.bias")
    if c_dim:
        state["embed.weight"], state["embed.bias"] = take("mapping.embed.weight"), take("mapping.embed.bias")
    return state


def set_w_avg(gen, tensors: dict[str, torch.Tensor], where: str) -> None:
    """The stored truncation centre ``mapping.w_avg``, or an estimate when none is stored."""
    if "mapping.w_avg" in tensors:
        gen.w_avg.copy_(tensors["mapping.w_avg"].detach().to(torch.float32))
    else:  # a mapping built with w_avg_beta=None stores no average: estimate it
        warnings.warn(f"{where}: no stored mapping.w_avg; estimating it from 4096 samples")
        gen.estimate_w_avg()


def convert_generator(g: PersistentObject, name: str = "stylegan2-nvidia",
                      where: str = "G_ema") -> StyleGAN2Generator:
    """Map an NVIDIA StyleGAN2 ``Generator`` (as read by ``read_nvidia_pickle``) onto a new
    ``StyleGAN2Generator`` (not frozen, no view set)."""
    signs = stylegan3_signs(g)
    if signs:
        raise NvidiaPickleError(
            f"{where}: a StyleGAN3 (-T / -R) generator (layers {', '.join(signs[:4])}"
            f"{', ...' if len(signs) > 4 else ''}): load it with load_nvidia_pickle, which reads "
            f"StyleGAN3 synthesis (generators/formats/nvidia_stylegan3.py)")
    synthesis = _need(g.module("synthesis"), "synthesis network", where)
    kw = g.init_kwargs
    syn_kw = dict(kw.get("synthesis_kwargs") or {}) or kw  # stylegan3 keeps them at the top level

    m = read_mapping(g, where)
    fcs, w_dim, c_dim, z_dim, lr_mlp = m["fcs"], m["w_dim"], m["c_dim"], m["z_dim"], m["lr_mlp"]

    # -- the synthesis network
    blocks = {int(k[1:]): v for k, v in synthesis.children().items() if re.fullmatch(r"b\d+", k)}
    resolution = max(blocks) if blocks else 0
    expected = [4 * 2 ** i for i in range(int(math.log2(max(resolution, 4))) - 1)]
    if resolution < 8 or sorted(blocks) != expected:
        raise NvidiaPickleError(f"{where}: synthesis blocks {sorted(synthesis.children())} are not "
                                "b4, b8, ..., bR with R >= 8")
    if "img_resolution" in kw and int(kw["img_resolution"]) != resolution:
        raise NvidiaPickleError(f"{where}: img_resolution={kw['img_resolution']} but blocks up to {resolution}")
    for res, block in blocks.items():
        arch = block.get("architecture", syn_kw.get("architecture", "skip"))
        if arch != "skip":
            raise NvidiaPickleError(
                f"{where}: synthesis architecture {arch!r} (block b{res}) is not supported: only "
                f"'skip' (the StyleGAN2 default). Supported: {SUPPORTED}")
    b4 = blocks[4]
    rgb = _tensor(_need(b4.module("torgb"), "b4.torgb", where), "weight", where, "synthesis.b4.torgb")
    img_channels = int(kw.get("img_channels", rgb.shape[0]))
    if img_channels != 3 or rgb.shape[0] != 3:
        raise NvidiaPickleError(f"{where}: img_channels={img_channels}: only RGB (3) generators are supported")
    const = _tensor(b4, "const", where, "synthesis.b4")
    channels = [const.shape[0]] + [
        _tensor(_need(blocks[r].module("conv1"), f"b{r}.conv1", where), "weight", where,
                f"synthesis.b{r}.conv1").shape[0] for r in expected[1:]]
    clamp = _need(b4.module("conv1"), "b4.conv1", where).get("conv_clamp", syn_kw.get("conv_clamp"))
    conv_clamp = float(clamp) if clamp is not None else None
    tensors = g.named_tensors()
    blur = _blur_kernel({k: v for k, v in tensors.items() if k.endswith("resample_filter")}, where)

    with torch.random.fork_rng(devices=[]):  # the constructor's random init leaves no trace
        gen = StyleGAN2Generator(resolution=resolution, style_dim=w_dim, n_mlp=len(fcs),
                                 channels=channels, lr_mlp=lr_mlp, blur_kernel=blur, z_dim=z_dim,
                                 c_dim=c_dim, conv_clamp=conv_clamp, name=name)

    # -- the state, in the project's names
    mapped = _StateMap(tensors, lambda why: NvidiaPickleError(f"{where}: {why}"))
    state, take = mapped.state, mapped.take

    def linear(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = take(f"{src}.weight"), take(f"{src}.bias")

    state.update(mapping_state(take, fcs, c_dim))
    state["input.input"] = take("synthesis.b4.const")[None]
    noises: list[tuple[str, int]] = []

    def styled_conv(dst: str, src: str, res: int, kernel: int) -> None:
        weight = take(f"{src}.weight")
        if weight.shape[-1] != kernel:
            raise NvidiaPickleError(f"{where}: {src} has a {weight.shape[-1]}x{weight.shape[-1]} "
                                    f"kernel, expected {kernel}x{kernel}")
        state[f"{dst}.conv.weight"] = weight[None]
        linear(f"{dst}.conv.modulation", f"{src}.affine")
        if kernel == 1:  # ToRGB
            state[f"{dst}.bias"] = take(f"{src}.bias").view(1, -1, 1, 1)
            return
        state[f"{dst}.activate.bias"] = take(f"{src}.bias")
        if f"{src}.noise_const" in tensors:
            state[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
            state[f"noises.noise_{len(noises)}"] = take(f"{src}.noise_const").reshape(1, 1, res, res)
        else:  # use_noise=False
            state[f"{dst}.noise.weight"] = torch.zeros(1)
            state[f"noises.noise_{len(noises)}"] = torch.zeros(1, 1, res, res)
        noises.append((src, res))

    styled_conv("conv1", "synthesis.b4.conv1", 4, 3)
    styled_conv("to_rgb1", "synthesis.b4.torgb", 4, 1)
    for j, res in enumerate(expected[1:]):
        if blocks[res].module("conv0") is not None and int(blocks[res].module("conv0").get("up", 2)) != 2:
            raise NvidiaPickleError(f"{where}: synthesis.b{res}.conv0 does not upsample by 2")
        styled_conv(f"convs.{2 * j}", f"synthesis.b{res}.conv0", res, 3)
        styled_conv(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", res, 3)
        styled_conv(f"to_rgbs.{j}", f"synthesis.b{res}.torgb", res, 1)

    mapped.load_into(gen, also_known=("mapping.w_avg",))
    set_w_avg(gen, tensors, where)
    return gen


# ---- D -> StyleGAN2Discriminator -----------------------------------------------------------
def convert_discriminator(d: PersistentObject, where: str = "D") -> StyleGAN2Discriminator:
    """Map an unconditional residual NVIDIA ``Discriminator`` onto ``StyleGAN2Discriminator``.

    NVIDIA discriminators clamp activations at ``conv_clamp`` (256); the project's does not, so
    scores agree while no activation exceeds it (true of trained networks in float32).

    Raises:
        NotImplementedError: conditional, non-residual or otherwise unsupported discriminators.
    """
    def refuse(why: str) -> NotImplementedError:
        return NotImplementedError(f"{where}: cannot map the discriminator D onto "
                                   f"StyleGAN2Discriminator: {why} (supported: unconditional "
                                   "'resnet' discriminators of RGB images); load with "
                                   "discriminator=False to use the generator alone")

    kw = d.init_kwargs
    if int(kw.get("c_dim", 0) or 0) > 0 or d.module("mapping") is not None:
        raise refuse("it is conditional (c_dim > 0)")
    blocks = {int(k[1:]): v for k, v in d.children().items()
              if re.fullmatch(r"b\d+", k) and v.class_name != "DiscriminatorEpilogue"}
    epilogue = d.module("epilogue") or d.module("b4")
    if not blocks or epilogue is None:
        raise refuse(f"unknown layout {sorted(d.children())}")
    resolution = max(blocks)
    expected = [4 * 2 ** i for i in range(1, int(math.log2(resolution)) - 1)]
    if sorted(blocks) != expected:
        raise refuse(f"blocks {sorted(blocks)}")
    for res, block in blocks.items():
        arch = block.get("architecture", kw.get("architecture", "resnet"))
        if arch != "resnet":
            raise refuse(f"architecture {arch!r}")
    if int(kw.get("img_channels", 3)) != 3:
        raise refuse(f"img_channels={kw.get('img_channels')}")
    mbstd = epilogue.module("mbstd")
    if mbstd is None or int(mbstd.get("num_channels", 1)) != 1 or mbstd.get("group_size") is None:
        raise refuse("a minibatch-stddev layer other than one feature over fixed-size groups")
    if int(epilogue.get("cmap_dim", 0) or 0) > 0:
        raise refuse("it is conditional (cmap_dim > 0)")
    tensors = d.named_tensors()
    epi = "b4" if d.module("b4") is epilogue else "epilogue"
    if f"{epi}.conv.weight" not in tensors or any(f"b{r}.conv0.weight" not in tensors for r in expected):
        raise refuse("convolution weights missing")
    channels = [int(tensors[f"{epi}.conv.weight"].shape[0])]
    channels += [int(tensors[f"b{r}.conv0.weight"].shape[0]) for r in expected]
    blur = _blur_kernel({k: v for k, v in tensors.items() if k.endswith("resample_filter")}, where)
    with torch.random.fork_rng(devices=[]):
        disc = StyleGAN2Discriminator(resolution=resolution, channels=channels, blur_kernel=blur,
                                      stddev_group=int(mbstd.get("group_size")))
    mapped = _StateMap(tensors, refuse)
    state, take = mapped.state, mapped.take
    state["convs.0.0.weight"] = take(f"b{resolution}.fromrgb.weight")
    state["convs.0.1.bias"] = take(f"b{resolution}.fromrgb.bias")
    for k, res in enumerate(reversed(expected), start=1):
        state[f"convs.{k}.conv1.0.weight"] = take(f"b{res}.conv0.weight")
        state[f"convs.{k}.conv1.1.bias"] = take(f"b{res}.conv0.bias")
        state[f"convs.{k}.conv2.1.weight"] = take(f"b{res}.conv1.weight")
        state[f"convs.{k}.conv2.2.bias"] = take(f"b{res}.conv1.bias")
        state[f"convs.{k}.skip.1.weight"] = take(f"b{res}.skip.weight")
    state["final_conv.0.weight"] = take(f"{epi}.conv.weight")
    state["final_conv.1.bias"] = take(f"{epi}.conv.bias")
    for i, src in enumerate(("fc", "out")):
        state[f"final_linear.{i}.weight"] = take(f"{epi}.{src}.weight")
        state[f"final_linear.{i}.bias"] = take(f"{epi}.{src}.bias")
    mapped.load_into(disc)
    return disc


__all__ = ["ADAPTER", "ALLOWED_GLOBALS", "ForbiddenGlobalError", "NvidiaPickleError",
           "NvidiaUnpickler", "PersistentObject", "convert_discriminator", "convert_generator",
           "load_nvidia_pickle", "read_nvidia_pickle", "stylegan3_signs"]
