"""Your own generator: any ``nn.Module`` behind the Generator interface, without editing the
project (README, "Your own generator"; an example in examples/my_generator/).

``ModuleGenerator`` wraps a network that maps latents ``N x latent_dim`` (and classes ``y``
where ``num_classes`` is set) to images ``N x 3 x resolution x resolution``: it loads its
weights safely, freezes it (eval mode, no gradients), converts its images from
``output_range`` to [-1, 1], draws latents from N(0, I), records a hash of the weights and the
network's class in its identity, and is checked at start-up (``generators.check``). A config
names the network with a nested ``_target_`` and ``_recursive_: false`` (the adapter builds
the network itself, so the config that rebuilds it is recorded in directions files):

    _target_: generators.adapter.ModuleGenerator
    _recursive_: false
    module: {_target_: my_generator.ToyGenerator, latent_dim: 8}
    latent_dim: 8
    resolution: 32
    output_range: [0, 1]

A network that reads the latent in another shape (a DCGAN's ``N x 100 x 1 x 1``) gets
``input_shape: [100, 1, 1]``: the methods still see ``N x latent_dim`` latents. A network with
an unusual signature gets ``call`` (a method name) and ``call_kwargs``, or a subclass that
overrides ``call_module`` (and ``sample`` for another prior); a subclass sets what its
overrides need before calling ``super().__init__``, which ends with the check.

The hooks, each in one orientation (docs/generators.md, "Your own generator"):

- ``call_module(x, y)``: the network's images for its input ``x`` (the latent reshaped to
  ``N x input_shape``, or ``N x latent_dim``) and classes ``y``, in ``output_range``;
- ``projection_weight()``: SeFa's matrix ``A``, ``rows x latent_dim``: column j is what the
  layer named by ``projection`` outputs (flattened) per unit of latent coordinate j, bias left
  out. A Linear: its weight (out x latent_dim). A ConvTranspose2d or Conv2d on the 1 x 1 input
  it reads: the matrix of its map on that input, one row per output channel and pixel
  (``(out * H * W) x latent_dim``; a ConvTranspose2d of kernel k, padding 0: its weight
  ``latent_dim x out x k x k`` moved to ``(out * k * k) x latent_dim``; a padded Conv2d: only
  the taps that meet the one input pixel, the centre tap for kernel 3, padding 1);
- ``features(latent, k)``: the output of ``feature_layers[k]`` (``N x ...``), GANSpace's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F

from common.errors import UserError
from common.io import read_weights_file
from generators import _load_state, _regressor_spec, plain, state_sha256
from generators.base import Generator
from generators.check import check_generator
from generators.weights import WEIGHTS_DIR


def _input_shape(shape: Sequence[int] | None, latent_dim: int) -> tuple[int, ...] | None:
    """``input_shape`` checked: positive sizes whose product is ``latent_dim``."""
    shape = plain(shape)
    if shape is None:
        return None
    if not isinstance(shape, list) or not shape or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise UserError(f"input_shape={shape!r}: expected a list of positive sizes, "
                        f"e.g. [{latent_dim}, 1, 1] for a network that reads N x {latent_dim} "
                        "x 1 x 1, or null")
    if math.prod(shape) != latent_dim:
        raise UserError(f"input_shape={list(shape)} holds {math.prod(shape)} numbers a latent, "
                        f"latent_dim is {latent_dim}: e.g. [{latent_dim}, 1, 1]")
    return tuple(int(v) for v in shape)


def _weights_key_hint(state: Any, net: nn.Module) -> str | None:
    """Where a file holds the network's state dict under a key (``{"netG_state_dict": ...,
    "epoch": ...}``): the ``weights_key`` setting that reads it; None otherwise."""
    if not isinstance(state, Mapping):
        return None
    wanted = set(net.state_dict())
    nested = {k: len(wanted & set(v)) for k, v in state.items()
              if isinstance(k, str) and isinstance(v, Mapping) and v
              and all(isinstance(n, str) for n in v) and any(torch.is_tensor(t) for t in v.values())}
    if not nested:
        return None
    best = max(nested, key=nested.get)
    others = f" (state dicts under {sorted(nested)})" if len(nested) > 1 else ""
    return (f"the network's state dict is under the key {best!r} of the file{others}: set "
            f"weights_key: {best} (generator.weights_key={best})")


class _Captured(Exception):
    """Stops the network once the feature layer asked for has run (``features``)."""


def _build(config: Mapping) -> nn.Module:
    """The network from its config; a target Python cannot find gets the PYTHONPATH hint."""
    try:
        # config-from-command-line: the user's own generator config, or a recorded one that
        # generators.recorded checked first (a class the user named, plain values only)
        return instantiate(config)
    except InstantiationException as err:
        # A wrong target or wrong arguments are a mistake in the config: one line. Anything the
        # network's own constructor raised is a bug in that code and keeps its traceback.
        cause = err.__cause__
        located = "Error locating target" not in str(err)
        wrong_args = isinstance(cause, TypeError) and any(
            s in str(cause) for s in ("unexpected keyword argument", "required positional argument",
                                      "positional argument but", "positional arguments but"))
        if located and not wrong_args and not isinstance(cause, UserError):
            raise
        text = " ".join(str(err).split(", set env var HYDRA_FULL_ERROR")[0].split())  # one line
        hint = ("" if located else ": is the folder of its module on PYTHONPATH (e.g. "
                "PYTHONPATH=examples/my_generator)?")
        raise UserError(f"generator.module: {text}{hint}") from err


class ModuleGenerator(Generator):
    """A frozen generator around any ``nn.Module`` (see the module docstring).

    Args:
        module: the network, or a config that builds it (a mapping with ``_target_``).
        latent_dim: size of the latent the network reads (z ~ N(0, I)).
        resolution: side of its square images in pixels.
        output_range: ``[low, high]`` of its images (``[-1, 1]``, ``[0, 1]``, ``[0, 255]``),
            mapped linearly to [-1, 1].
        num_classes: class count of a conditional network (called as ``module(z, y)``).
        weights: a file holding the network's ``state_dict``, read with ``weights_only=True``
            (a name shipped in generators/weights/ also works); None: the weights it was built
            with. ``weights_key``: the key of the state dict inside that file (e.g. ``g_ema``).
        call: the name of the network's method to call instead of ``forward``;
            ``call_kwargs``: keyword arguments for every call (e.g. ``{noise_mode: const}``).
        input_shape: the shape of one latent as the network reads it (``[100, 1, 1]`` for a
            DCGAN that reads ``N x 100 x 1 x 1``; its product is ``latent_dim``); None: the
            network reads ``N x latent_dim``. The methods always see ``N x latent_dim``.
        projection: the name of the submodule that reads the latent (a Linear, a
            ConvTranspose2d or a Conv2d on a 1 x 1 input): SeFa's ``projection_weight``.
            ``feature_layers``: names of submodules whose outputs are GANSpace's
            ``features(latent, k)``, k = 0, 1, ... (``method.feature_layer=k``)
        bounded: False for a network only roughly in range (no tanh): the start-up check then
            refuses only images with no negative value.
        name, space, regressor: as for the other generators (space: ``z`` only).
    """

    adapter = "module"

    def __init__(self, module: nn.Module | Mapping, latent_dim: int, resolution: int,
                 output_range: Sequence[float] = (-1, 1), num_classes: int | None = None,
                 weights: str | None = None, weights_key: str | None = None,
                 call: str | None = None, call_kwargs: Mapping | None = None,
                 input_shape: Sequence[int] | None = None,
                 projection: str | None = None, feature_layers: Sequence[str] | None = None,
                 bounded: bool = True, name: str | None = None, space: str = "z",
                 regressor: dict | None = None) -> None:
        super().__init__()
        args = {k: plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        net = _build(module) if isinstance(module, Mapping) else module
        if not isinstance(net, nn.Module):
            raise UserError(f"module must be an nn.Module (or its config), got "
                            f"{type(net).__name__}")
        if call is not None and not callable(getattr(net, call, None)):
            raise UserError(f"call={call!r}: {type(net).__name__} has no method {call!r}")
        low, high = (float(v) for v in output_range)
        if not low < high:
            raise UserError(f"output_range must be [low, high] with low < high, got "
                             f"{list(output_range)}")
        if weights is not None:
            path, state = read_weights_file(weights, WEIGHTS_DIR, "generator", "pass "
                                            "generator.weights=<torch.save(module.state_dict())>")
            if weights_key is not None:
                if not isinstance(state, Mapping) or weights_key not in state:
                    keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
                    hint = _weights_key_hint(state, net) or ("set generator.weights_key to the "
                                                             "key that holds the state dict, or null")
                    raise UserError(f"{path}: no weights_key {weights_key!r} in the file, whose keys "
                                    f"are {keys}: {hint}")
                state = state[weights_key]
            try:
                _load_state(net, state, path, "generator")
            except UserError as err:
                hint = _weights_key_hint(state, net) if weights_key is None else None
                if hint is None:
                    raise
                raise UserError(f"{path}: {hint}; as read, {str(err).removeprefix(f'{path}: ')}"
                                ) from None
        self.input_shape = _input_shape(input_shape, int(latent_dim))
        self.module, self.z_dim, self.resolution = net, int(latent_dim), int(resolution)
        self.num_classes = int(num_classes) if num_classes else None
        self.output_range, self.bounded_output = (low, high), bool(bounded)
        self.call, self.call_kwargs = call, dict(plain(call_kwargs or {}))
        self.projection, self.feature_layers = projection, list(feature_layers or [])
        cls = type(net)
        self.target = f"{cls.__module__}.{cls.__qualname__}" + (f".{call}" if call else "")
        self.name = name or cls.__name__
        if type(self) is not ModuleGenerator:  # a subclass calls the network its own way
            self.adapter = f"{type(self).__module__}.{type(self).__qualname__}"
        self.set_view(space)
        self.regressor_spec = _regressor_spec(regressor)
        self.sha256 = state_sha256(net)
        # The config that rebuilds it, where there is one (a module given as an object has none).
        self.source = ({"_target_": f"{type(self).__module__}.{type(self).__qualname__}",
                        "_recursive_": False, **args} if isinstance(module, Mapping) else None)
        check_generator(self.freeze())

    def call_module(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network's images (in ``output_range``) for its input ``x``: the latent as the
        network reads it (``network_input``: ``N x latent_dim``, or ``N x input_shape``), and
        classes ``y``. Override for a signature that ``call`` and ``call_kwargs`` cannot
        express."""
        fn = getattr(self.module, self.call) if self.call else self.module
        return fn(x, **self.call_kwargs) if y is None else fn(x, y, **self.call_kwargs)

    def network_input(self, latent: torch.Tensor) -> torch.Tensor:
        """Latents ``N x latent_dim`` as the network reads them: ``N x input_shape`` where
        ``input_shape`` is set, else unchanged."""
        if self.input_shape is None:
            return latent
        return latent.reshape(latent.shape[0], *self.input_shape)

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_latent(latent)
        self.check_classes(y, latent.shape[0])
        images = self.call_module(self.network_input(latent), y)
        if not torch.is_tensor(images):
            raise UserError(f"{self.name}: the network returned a {type(images).__name__}, not "
                            "images: override call_module to return them (README, 'Your own "
                            "generator')")
        low, high = self.output_range
        return images if (low, high) == (-1, 1) else (images - low) * (2 / (high - low)) - 1

    def _submodule(self, name: str, what: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        if name not in modules:
            raise UserError(f"{what}={name!r}: {self.name} has no submodule {name!r}; some of "
                             f"its submodules: {[k for k in modules if k][:12]}")
        return modules[name]

    def projection_weight(self, layers: Any = None) -> torch.Tensor:
        """SeFa's matrix ``A`` (``rows x latent_dim``) of the layer named by ``projection``:
        column j is the change of the layer's output (flattened) per unit of latent coordinate
        j, bias left out. A Linear gives its weight; a ConvTranspose2d or a Conv2d on the
        1 x 1 input it reads gives the matrix of its map on that input, a row per output
        channel and pixel (module docstring)."""
        self.layers(layers)  # one layer: "all" / 0 only
        if self.projection is None:
            found = self._latent_readers()
            hint = (f"generator.projection={found[0][0]} (its {found[0][1]} reads the latent)"
                    if found else "generator.projection=<the submodule that reads the latent: "
                    "a Linear, a ConvTranspose2d or a Conv2d on a 1 x 1 input>")
            raise NotImplementedError(f"{self.name}: set {hint}, or override projection_weight "
                                      f"to return the rows x {self.latent_dim} matrix that reads "
                                      "the latent (docs/generators.md, 'Your own generator')")
        layer = self._submodule(self.projection, "projection")
        d, name = self.latent_dim, f"projection={self.projection!r}"
        fix = (f"name the layer that reads the latent (generator.projection), or override "
               f"projection_weight to return its rows x {d} matrix (docs/generators.md, 'Your own "
               "generator')")
        if not isinstance(layer, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)):
            found = self._latent_readers()
            fix = f"set generator.projection={found[0][0]}" if found else fix
            raise UserError(f"{name} is a {type(layer).__name__}: SeFa reads the weight of a "
                            "Linear, a ConvTranspose2d or a Conv2d on a 1 x 1 input that reads "
                            f"the latent; {fix}")
        conv = not isinstance(layer, nn.Linear)
        seen = self._input_of(layer)
        reads = ((len(seen) == 4 and seen[1:] == (d, 1, 1)) if conv else
                 (seen[-1:] == (d,) and math.prod(seen) == seen[0] * d))
        if not reads:
            expected = f"N x {d} x 1 x 1" if conv else f"N x {d}"
            raise UserError(f"{name}: this {type(layer).__name__} reads inputs "
                            f"{' x '.join(['N', *map(str, seen[1:])])}, not the latent "
                            f"({expected}); {fix}")
        if not conv:
            return layer.weight
        probe = torch.eye(d, dtype=layer.weight.dtype, device=layer.weight.device).view(d, d, 1, 1)
        with torch.no_grad():
            if isinstance(layer, nn.ConvTranspose2d):
                out = F.conv_transpose2d(probe, layer.weight, None, layer.stride, layer.padding,
                                         layer.output_padding, layer.groups, layer.dilation)
            else:
                out = layer._conv_forward(probe, layer.weight, None)
        return out.flatten(1).T.contiguous()  # (out x H x W) x d

    def _probe(self, hooks: Mapping[str, nn.Module], stop: nn.Module | None = None
               ) -> dict[str, tuple[int, ...]]:
        """The input shape each of ``hooks`` (name: submodule) reads on one seeded latent, the
        network stopped once ``stop`` has read its input."""
        seen: dict[str, tuple[int, ...]] = {}

        def hook(name):
            def record(module, inputs):
                if name not in seen and inputs and torch.is_tensor(inputs[0]):
                    seen[name] = tuple(inputs[0].shape)
                if module is stop:
                    raise _Captured
            return record

        handles = [m.register_forward_pre_hook(hook(k)) for k, m in hooks.items()]
        try:
            with torch.no_grad():
                latent, y = self.draw(1, torch.Generator().manual_seed(0))
                self.call_module(self.network_input(latent.to(self.device)),
                                 None if y is None else y.to(self.device))
        except _Captured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return seen

    def _input_of(self, layer: nn.Module) -> tuple[int, ...]:
        seen = self._probe({"layer": layer}, stop=layer)
        if "layer" not in seen:
            raise UserError(f"projection={self.projection!r} did not run on the way to the "
                            "images: name the layer that reads the latent (generator.projection)")
        return seen["layer"]

    def _latent_readers(self) -> list[tuple[str, str]]:
        """``(name, class)`` of the Linear / ConvTranspose2d / Conv2d layers that read an input
        of the latent's shape, in the order they run (a hint for ``projection``)."""
        d = self.latent_dim
        layers = {k: m for k, m in self.module.named_modules()
                  if isinstance(m, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d))}
        try:
            seen = self._probe(layers)
        except Exception:  # noqa: BLE001 - only a hint: a network that fails here gets none
            return []
        return [(k, type(layers[k]).__name__) for k in seen
                if seen[k] in ((1, d), (1, d, 1, 1)) and k]

    def features(self, latent: torch.Tensor, layer: int | str,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """The output of ``feature_layers[layer]`` (or of the submodule named ``layer``) on the
        way to the images (GANSpace); the rest of the network is not run."""
        if isinstance(layer, int):
            if not 0 <= layer < len(self.feature_layers):
                leaves = {k: m for k, m in self.module.named_modules() if k and not any(m.children())}
                # the activations (no weights of their own) make the likeliest example
                plain_ops = [k for k, m in leaves.items() if next(m.parameters(), None) is None
                             and next(m.buffers(), None) is None] or list(leaves)
                fix = ("set generator.feature_layers to a list of names of its submodules whose "
                       f"outputs are analysed, e.g. [{', '.join(plain_ops[:2])}] (some of its "
                       f"submodules: {list(leaves)[:12]})" if not self.feature_layers else
                       f"use an index in 0..{len(self.feature_layers) - 1}, or add submodule "
                       "names to generator.feature_layers")
                raise UserError(f"feature layer {layer}: {self.name} has feature_layers "
                                f"{self.feature_layers}, the names of the submodules whose "
                                f"outputs are its features 0, 1, ...: {fix}")
            layer = self.feature_layers[layer]
        captured = []

        def stop(module, inputs, output):
            captured.append(output)
            raise _Captured

        handle = self._submodule(layer, "feature layer").register_forward_hook(stop)
        try:
            self.check_latent(latent)
            self.call_module(self.network_input(latent), y)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"feature layer {layer!r} did not run on the way to the images")
        return captured[0]

    def identity(self) -> dict[str, Any]:
        """The base identity, plus the network's class (and ``call``), its output range and,
        where set, ``input_shape``."""
        shape = {} if self.input_shape is None else {"input_shape": list(self.input_shape)}
        return {**super().identity(), "target": self.target,
                "output_range": list(self.output_range), **shape}
