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

A network with an unusual signature gets ``call`` (a method name) and ``call_kwargs``, or a
subclass that overrides ``call_module`` (and ``sample`` for another prior); a subclass sets
what its overrides need before calling ``super().__init__``, which ends with the check.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from common.errors import UserError
from common.io import read_weights_file
from generators import _load_state, _regressor_spec, plain, state_sha256
from generators.base import Generator
from generators.check import check_generator
from generators.weights import WEIGHTS_DIR


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
        projection: the name of the submodule whose ``weight`` (out x latent_dim) reads the
            latent: SeFa's ``projection_weight``. ``feature_layers``: names of submodules whose
            outputs are GANSpace's ``features(latent, k)``, k = 0, 1, ...
        bounded: False for a network only roughly in range (no tanh): the start-up check then
            refuses only images with no negative value.
        name, space, regressor: as for the other generators (space: ``z`` only).
    """

    adapter = "module"

    def __init__(self, module: nn.Module | Mapping, latent_dim: int, resolution: int,
                 output_range: Sequence[float] = (-1, 1), num_classes: int | None = None,
                 weights: str | None = None, weights_key: str | None = None,
                 call: str | None = None, call_kwargs: Mapping | None = None,
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
                    raise UserError(f"{path}: no weights_key {weights_key!r} in the file: {keys}")
                state = state[weights_key]
            _load_state(net, state, path, "generator")
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

    def call_module(self, latent: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network's images for ``latent`` (and classes ``y``): override for a signature
        that ``call`` and ``call_kwargs`` cannot express."""
        fn = getattr(self.module, self.call) if self.call else self.module
        return fn(latent, **self.call_kwargs) if y is None else fn(latent, y, **self.call_kwargs)

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_latent(latent)
        self.check_classes(y, latent.shape[0])
        images = self.call_module(latent, y)
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
        """The weight of the submodule named by ``projection`` (SeFa)."""
        self.layers(layers)  # one layer: "all" / 0 only
        if self.projection is None:
            raise NotImplementedError(f"{self.name}: set generator.projection=<the submodule "
                                      "whose weight reads the latent> for SeFa")
        weight = self._submodule(self.projection, "projection").weight
        if weight.ndim != 2 or weight.shape[1] != self.latent_dim:
            raise UserError(f"projection={self.projection!r}: its weight is "
                             f"{tuple(weight.shape)}, not out x {self.latent_dim}")
        return weight

    def features(self, latent: torch.Tensor, layer: int | str,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """The output of ``feature_layers[layer]`` (or of the submodule named ``layer``) on the
        way to the images (GANSpace); the rest of the network is not run."""
        if isinstance(layer, int):
            if not 0 <= layer < len(self.feature_layers):
                raise UserError(f"feature layer {layer}: {self.name} has feature_layers "
                                 f"{self.feature_layers} (set generator.feature_layers)")
            layer = self.feature_layers[layer]
        captured = []

        def stop(module, inputs, output):
            captured.append(output)
            raise _Captured

        handle = self._submodule(layer, "feature layer").register_forward_hook(stop)
        try:
            self.check_latent(latent)
            self.call_module(latent, y)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"feature layer {layer!r} did not run on the way to the images")
        return captured[0]

    def identity(self) -> dict[str, Any]:
        """The base identity, plus the network's class (and ``call``) and its output range."""
        return {**super().identity(), "target": self.target,
                "output_range": list(self.output_range)}
