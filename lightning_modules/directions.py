"""The Directions artifact and the direction parametrisations it can hold.

Every method ends with a ``Directions`` object saved as ``directions.pt``: a parametrisation
(an ``nn.Module`` that knows how to ``shift(latent, index, alpha)``) plus metadata (method,
generator identity and how to rebuild it, latent space, layers, alpha range, config, metrics).
Loading one never needs a method's training code: the parametrisations live here, and a
LightningModule imports its parametrisation from this file.

A directions file (format ``DIRECTIONS_FORMAT``, v2) is a dict ``format, kind, config,
state_dict, meta`` holding only tensors and plain data: it loads with
``torch.load(weights_only=True)``, so a shared file can never run code. Version 1 files (the
same keys; no ``layers`` in the config, no ``generator_source`` in meta) load and are upgraded
in memory.

Per-layer (W+) directions: a set built with ``layers=[...]`` moves only those per-layer codes of
``N x L x d`` latents and refuses ``N x d`` latents; a set with ``layers=None`` moves ``N x d``
latents, or every layer of ``N x L x d`` ones.

Class-dependent directions (GANalyze's theta(y) on a conditional generator): ``meta
["direction_classes"]`` names the class of each stored direction, and the artifact's
``shift`` / ``apply`` / ``traverse`` / renderers take the latents' classes ``y`` and move each
latent along its own class's direction (``num_directions`` counts the directions of one class).
"""
from __future__ import annotations

import io
import itertools
import math
import operator
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from common.io import atomic_write
from generators.base import describe_layers, identity_mismatch

DIRECTIONS_FORMAT = "latent-directions/directions/v2"
DIRECTIONS_FORMAT_V1 = "latent-directions/directions/v1"
READABLE_FORMATS = (DIRECTIONS_FORMAT_V1, DIRECTIONS_FORMAT)
_KEYS = {"format", "kind", "config", "state_dict", "meta"}


def _as_batch(value, n: int, device, dtype) -> torch.Tensor:
    tensor = torch.as_tensor(value, device=device, dtype=dtype)
    return tensor.expand(n) if tensor.ndim == 0 else tensor


def _check_layers(layers) -> list[int] | None:
    """``None`` (every layer) or a sorted list of distinct layer indices."""
    if layers is None:
        return None
    if isinstance(layers, str):
        raise ValueError(f"layers={layers!r}: a direction set takes layer indices; resolve a spec "
                         "such as 'coarse' or '0-3' with generator.layers(spec)")
    if isinstance(layers, torch.Tensor):
        layers = layers.tolist()
    try:
        values = [operator.index(layers)] if isinstance(layers, int) else \
            [operator.index(i) for i in layers]
    except TypeError:
        raise ValueError(f"layers={layers!r}: give None (every layer) or a list of layer "
                         "indices (generator.layers(spec) resolves a spec)") from None
    if not values or min(values) < 0:
        raise ValueError(f"layers={layers!r}: give None (every layer) or a non-empty list of "
                         "non-negative layer indices")
    return sorted(set(values))


def edit_pairs(edits) -> list[tuple]:
    """``edits`` as a list of ``(index, alpha)`` pairs; a ValueError names one that is not."""
    pairs = []
    for edit in edits:
        try:
            index, alpha = edit
        except (TypeError, ValueError):
            raise ValueError(f"an edit is a pair (index, alpha), got {edit!r}") from None
        pairs.append((index, alpha))
    return pairs


class DirectionSet(nn.Module):
    """Base of the parametrisations: ``num_directions`` directions in a ``latent_dim`` space.

    ``shift(latent, index, alpha)`` moves each latent along direction ``index`` (an int or ``N``
    ints) by ``alpha`` (a float or ``N`` floats). Latents are ``N x d``, or ``N x L x d``
    per-layer (W+) codes: then the set's own ``N x d`` shift (``shift_codes``) moves each of the
    set's ``layers`` (every layer for ``layers=None``) and leaves the others as they are. Linear
    sets add ``alpha * v``.

    Args:
        latent_dim: d.
        num_directions: K.
        layers: the per-layer codes the set moves (``None``: every layer, and ``N x d``
            latents are accepted). A set with layers refuses ``N x d`` latents: it needs the
            W+ codes of a generator with ``space=w+``.
    """

    kind: str = "base"
    # True when ``shift_codes(z, k, a) - z`` does not depend on z (a translation): the per-layer
    # shift then adds one offset to every selected layer instead of shifting each code.
    translation: bool = False

    def __init__(self, latent_dim: int, num_directions: int, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        self.latent_dim, self.num_directions = latent_dim, num_directions
        self.layers = _check_layers(layers)
        self._layer_index: dict[torch.device, torch.Tensor] = {}

    def config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "num_directions": self.num_directions,
                "layers": None if self.layers is None else list(self.layers)}

    def vectors(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Unit directions ``K x d`` (linear sets)."""
        raise NotImplementedError

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        """The shift of codes ``N x d`` (what a parametrisation defines)."""
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        return latent + alpha[:, None] * self.vectors()[index]

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        """Latents ``N x d`` or ``N x L x d`` moved along direction ``index`` by ``alpha``."""
        if latent.ndim == 2 and self.layers is None:  # the hot path: exactly shift_codes
            return self.shift_codes(latent, index, alpha)
        return self.per_layer(self.shift_codes, latent, index, alpha, self.translation)

    def apply(self, latent: torch.Tensor, edits) -> torch.Tensor:
        """Several edits ``[(index, alpha), ...]`` in order, each from the previous result.
        Linear edits commute (the sum of the offsets); non-linear ones (warps, walks, norm-keeping
        vectors) follow one another, so their order matters."""
        for index, alpha in edit_pairs(edits):
            latent = self.shift(latent, index, alpha)
        return latent

    def _layers_on(self, num_layers: int, device) -> torch.Tensor:
        if self.layers[-1] >= num_layers:
            raise ValueError(f"this {self.kind} direction set moves layers {self.layers}, but the "
                             f"latents have {num_layers} per-layer codes (0..{num_layers - 1}): "
                             "use the generator it was made for")
        index = self._layer_index.get(device)
        if index is None:
            index = self._layer_index[device] = torch.tensor(self.layers, device=device)
        return index

    def per_layer(self, fn, latent: torch.Tensor, index, alpha, translation: bool = False) -> torch.Tensor:
        """``fn`` (a shift of codes ``N x d``) applied to the set's layers of ``N x L x d``
        latents, the selected layers flattened into the batch with each sample's index and
        alpha; the other layers are returned unchanged. With ``translation``, ``fn``'s offset
        at the origin is added to the selected layers instead."""
        if latent.ndim == 2:
            if self.layers is None:
                return fn(latent, index, alpha)
            raise ValueError(
                f"this {self.kind} direction set moves {describe_layers(self.layers, -1)} of "
                f"per-layer (W+) codes: it takes latents N x L x {self.latent_dim}, got "
                f"{tuple(latent.shape)}; use the generator's W+ space (generator.space=w+)")
        if latent.ndim != 3 or latent.shape[2] != self.latent_dim:
            raise ValueError(f"this {self.kind} direction set takes latents N x {self.latent_dim} "
                             f"or N x L x {self.latent_dim}, got {tuple(latent.shape)}")
        n, num_layers, d = latent.shape
        layers = None if self.layers is None else self._layers_on(num_layers, latent.device)
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        if translation:
            offset = fn(latent.new_zeros(n, d), index, alpha)[:, None]  # N x 1 x d
            if layers is None:
                return latent + offset
            return latent.index_add(1, layers, offset.expand(-1, len(self.layers), -1))
        selected = latent if layers is None else latent.index_select(1, layers)
        s = selected.shape[1]
        moved = fn(selected.reshape(n * s, d), index.repeat_interleave(s),
                   alpha.repeat_interleave(s)).reshape(n, s, d)
        return moved if layers is None else latent.index_copy(1, layers, moved)


class LinearDirections(DirectionSet):
    """Free directions, each normalised to unit length (Voynov's "linear").

    Args:
        latent_dim: size of the latent space.
        num_directions: K.
        init: ``"randn"`` (Gaussian columns) or ``"identity"`` (the first K coordinate axes).
        trainable: False keeps the directions fixed (the "random" and "id" baselines).
        init_seed: seed of the random initialisation (kept so a baseline is reproducible).
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "linear"
    translation = True

    def __init__(self, latent_dim: int, num_directions: int, init: str = "randn",
                 trainable: bool = True, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        if init == "identity":
            if num_directions > latent_dim:
                raise ValueError(f"coordinate-axis directions: num_directions ({num_directions}) "
                                 f"cannot exceed the latent size ({latent_dim})")
            weight = torch.eye(latent_dim)[:num_directions]
        elif init == "randn":
            gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
            weight = torch.randn(num_directions, latent_dim, generator=gen)
        else:
            raise ValueError(f"unknown init {init!r}: use 'randn' or 'identity'")
        self.init, self.trainable, self.init_seed = init, trainable, init_seed
        self.weight = nn.Parameter(weight, requires_grad=trainable)

    def config(self) -> dict[str, Any]:
        return dict(super().config(), init=self.init, trainable=self.trainable,
                    init_seed=self.init_seed)

    def vectors(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8)


class OrthoDirections(DirectionSet):
    """An orthonormal basis ``expm(S - S^T)`` (Voynov's "ortho"): K equals the latent size.

    Uses ``torch.linalg.matrix_exp``; the reference implementation's custom expm built on the
    removed ``torch.solve`` is neither needed nor kept.
    """

    kind = "ortho"
    translation = True

    def __init__(self, latent_dim: int, num_directions: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        num_directions = latent_dim if num_directions is None else num_directions
        if num_directions != latent_dim:
            raise ValueError(f"ortho directions form a basis: num_directions must equal the "
                             f"latent size {latent_dim}, got {num_directions}; use "
                             "directions_type=linear for another count")
        super().__init__(latent_dim, num_directions, layers)
        self.skew = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def vectors(self) -> torch.Tensor:
        return torch.linalg.matrix_exp(self.skew - self.skew.T)


class ProjDirections(DirectionSet):
    """Voynov's "proj": a free linear map with bias, its output rescaled to the shift's size.

    ``shift(z, k, a) = z + |a| * u / ||u||`` with ``u = a * W[k] + b``: with a zero bias it is a
    linear direction; the bias lets the two signs of a shift point in different directions.
    """

    kind = "proj"
    translation = True  # the offset depends on k and a, not on z

    def __init__(self, latent_dim: int, num_directions: int,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        self.weight = nn.Parameter(torch.randn(num_directions, latent_dim))
        self.bias = nn.Parameter(torch.zeros(latent_dim))

    def vectors(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)[:, None]
        u = alpha * self.weight[index] + self.bias
        return latent + alpha.abs() * u / u.norm(dim=1, keepdim=True).clamp_min(1e-8)


class RBFWarps(DirectionSet):
    """K warping functions of WarpedGANSpace (Tzelepis et al., ICCV 2021): non-linear paths.

        f_k(z) = sum_i a_i exp(-gamma_k ||z - v_i||^2),   i over the 2N support vectors of warp k

    with N dipoles (+v, -v) of weights a = (+1, -1). Walking direction k at z follows the unit
    gradient of f_k, in closed form (gamma included; an early reference version left it out):

        grad f_k(z) = -2 gamma_k sum_i a_i exp(-gamma_k ||z - v_i||^2) (z - v_i)

    ``step(z, k, eps)`` is one step ``z + eps * grad / ||grad||`` (what training applies);
    ``shift(z, k, alpha)`` walks ``alpha`` in steps of at most ``traversal_step``, re-evaluating
    the gradient after each, so evaluation and the edit tool follow the curved path. As gamma
    goes to 0 the gradient tends to 4 gamma sum_j v_j: a linear direction. On ``N x L x d``
    latents both walk each selected layer's code.

    Args:
        latent_dim, num_directions: d and K.
        num_dipoles: N (2N support vectors a warp).
        gamma: initial gamma of every warp (default 1/d); stored as log-gamma.
        learn_gammas: learn log-gamma per warp (the default here, as in the paper).
        learn_alphas: learn the dipole weights (fixed at +-1 by default).
        radii: the support vectors of warp k lie at a radius spread linearly over this range
            across the K warps (around the typical latent norm).
        traversal_step: the largest step of ``shift``.
        init_seed: seed of the support vectors.
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "warped"

    def __init__(self, latent_dim: int, num_directions: int, num_dipoles: int = 32,
                 gamma: float | None = None, learn_gammas: bool = True, learn_alphas: bool = False,
                 radii: tuple[float, float] | list[float] = (1.0, 4.0), traversal_step: float = 0.25,
                 init_seed: int | None = None, layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        if num_dipoles < 1:
            raise ValueError(f"num_dipoles must be at least 1, got {num_dipoles}")
        if traversal_step <= 0:
            raise ValueError(f"traversal_step must be positive, got {traversal_step}")
        gamma = 1.0 / latent_dim if gamma is None else gamma
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        v = torch.randn(num_directions, num_dipoles, latent_dim, generator=gen)
        radius = torch.linspace(float(radii[0]), float(radii[1]), num_directions)
        v = v / v.norm(dim=2, keepdim=True) * radius[:, None, None]
        self.support = nn.Parameter(torch.cat([v, -v], dim=1))  # K x 2N x d
        alphas = torch.cat([torch.ones(num_dipoles), -torch.ones(num_dipoles)])
        self.alphas = nn.Parameter(alphas.expand(num_directions, -1).clone(), requires_grad=learn_alphas)
        self.log_gamma = nn.Parameter(torch.full((num_directions,), math.log(gamma)),
                                      requires_grad=learn_gammas)
        self.num_dipoles, self.gamma, self.radii = num_dipoles, gamma, [float(r) for r in radii]
        self.learn_gammas, self.learn_alphas = learn_gammas, learn_alphas
        self.traversal_step, self.init_seed = traversal_step, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), num_dipoles=self.num_dipoles, gamma=self.gamma,
                    learn_gammas=self.learn_gammas, learn_alphas=self.learn_alphas,
                    radii=self.radii, traversal_step=self.traversal_step, init_seed=self.init_seed)

    def potential(self, latent: torch.Tensor, index) -> torch.Tensor:
        """f_k(z) for each latent (``N``): what the gradient is the gradient of."""
        index = _as_batch(index, latent.shape[0], latent.device, torch.long)
        diff = latent[:, None, :] - self.support[index]
        gamma = self.log_gamma[index].exp()[:, None]
        return (self.alphas[index] * torch.exp(-gamma * diff.pow(2).sum(-1))).sum(1)

    def gradient(self, latent: torch.Tensor, index) -> torch.Tensor:
        """grad f_k(z) in closed form (``N x d``)."""
        index = _as_batch(index, latent.shape[0], latent.device, torch.long)
        diff = latent[:, None, :] - self.support[index]  # N x 2N x d
        gamma = self.log_gamma[index].exp()[:, None]
        weight = self.alphas[index] * torch.exp(-gamma * diff.pow(2).sum(-1))  # N x 2N
        return -2 * gamma * (weight[..., None] * diff).sum(1)

    def step_codes(self, latent: torch.Tensor, index, eps) -> torch.Tensor:
        """One step of codes ``N x d``."""
        eps = _as_batch(eps, latent.shape[0], latent.device, latent.dtype)
        grad = self.gradient(latent, index)
        return latent + eps[:, None] * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def step(self, latent: torch.Tensor, index, eps) -> torch.Tensor:
        """One step of size ``eps`` along the unit gradient of warp ``index``."""
        if latent.ndim == 2 and self.layers is None:
            return self.step_codes(latent, index, eps)
        return self.per_layer(self.step_codes, latent, index, eps)

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        alpha = _as_batch(alpha, latent.shape[0], latent.device, latent.dtype)
        steps = max(1, math.ceil(float(alpha.abs().max()) / self.traversal_step)) if alpha.numel() else 1
        for _ in range(steps):
            latent = self.step_codes(latent, index, alpha / steps)
        return latent


class VectorDirections(DirectionSet):
    """Free, unnormalised vectors theta_k: their length sets how far alpha = 1 goes.

        shift(z, k, alpha) = z + alpha theta_k                                (a linear walk)
        shift(z, k, alpha) = (z + alpha theta_k) ||z|| / ||z + alpha theta_k||   (keep_norm)

    GANalyze's transform keeps each latent's norm; GAN Steerability's linear walk does not.
    With one vector per class (``num_directions`` = classes) it is GANalyze's class-dependent
    direction theta(y) = W one_hot(y). On ``N x L x d`` latents, keep_norm keeps the norm of
    each selected layer's code.

    Args:
        latent_dim, num_directions: d and K.
        init_scale: theta starts as ``init_scale`` times a Gaussian vector.
        keep_norm: rescale each shifted latent to its original norm.
        init_seed: seed of that start.
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "vectors"

    def __init__(self, latent_dim: int, num_directions: int = 1, init_scale: float = 0.1,
                 keep_norm: bool = False, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        self.theta = nn.Parameter(init_scale * torch.randn(num_directions, latent_dim, generator=gen))
        self.init_scale, self.keep_norm, self.init_seed = init_scale, keep_norm, init_seed

    @property
    def translation(self) -> bool:  # type: ignore[override]
        return not self.keep_norm

    def config(self) -> dict[str, Any]:
        return dict(super().config(), init_scale=self.init_scale, keep_norm=self.keep_norm,
                    init_seed=self.init_seed)

    def vectors(self) -> torch.Tensor:
        return self.theta / self.theta.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        moved = latent + alpha[:, None] * self.theta[index]
        if not self.keep_norm:
            return moved
        return moved * latent.norm(dim=1, keepdim=True) / moved.norm(dim=1, keepdim=True).clamp_min(1e-8)


class MLPWalk(DirectionSet):
    """GAN Steerability's non-linear walk: per slider, a forward and a backward residual MLP
    applied once per step of ``step_size``, each application renormalised to ||z||:

        z_{t+1} = (z_t + f(z_t)) ||z_0|| / ||z_t + f(z_t)||,   n = round(|alpha| / step_size)

    with f the forward net for alpha > 0 and the backward net for alpha < 0. ``n`` steps compose:
    walking alpha = a + b (same sign) from z is walking a, then b. On ``N x L x d`` latents each
    selected layer's code walks.

    Args:
        latent_dim: d.
        num_directions: sliders (one pair of nets each).
        hidden: width of the MLPs' hidden layer.
        step_size: the walk length of one application.
        init_seed: seed of the nets' initialisation.
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "walk_mlp"

    def __init__(self, latent_dim: int, num_directions: int = 1, hidden: int = 64,
                 step_size: float = 0.25, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        with torch.random.fork_rng(devices=[]):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            self.nets = nn.ModuleList(
                nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))
                for _ in range(2 * num_directions))  # forward, backward for each slider
        for net in self.nets:  # start near the identity: small steps
            nn.init.normal_(net[2].weight, std=1e-3)
            nn.init.zeros_(net[2].bias)
        self.hidden, self.step_size, self.init_seed = hidden, step_size, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), hidden=self.hidden, step_size=self.step_size,
                    init_seed=self.init_seed)

    def steps(self, alpha: torch.Tensor) -> torch.Tensor:
        return (alpha.abs() / self.step_size).round().long()

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        steps = self.steps(alpha)
        norm = latent.norm(dim=1, keepdim=True)
        net = 2 * index + (alpha < 0).long()  # which net each sample walks with
        z = latent
        for t in range(int(steps.max()) if n else 0):
            moved = torch.zeros_like(z)
            for j in net.unique().tolist():
                rows = net == j
                moved[rows] = z[rows] + self.nets[j](z[rows])
            moved = moved * norm / moved.norm(dim=1, keepdim=True).clamp_min(1e-8)
            z = torch.where((t < steps)[:, None], moved, z)
        return z


class BasisDirections(DirectionSet):
    """Fixed unit directions found in closed form (SeFa, GANSpace, InterFaceGAN, LowRankGAN),
    each with its own unit of alpha and a score:

        shift(z, k, alpha) = z + alpha * scales[k] * basis[k]

    ``scales`` is GANSpace's sigma (the spread of the samples along the component, so alpha
    counts standard deviations) and 1 for the others; ``values`` is what ranked the directions
    (eigenvalues, explained variance, accuracy), largest first. No parameters: nothing trains.

    Args:
        latent_dim, num_directions: d and K.
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "basis"
    translation = True

    def __init__(self, latent_dim: int, num_directions: int,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        self.register_buffer("basis", torch.zeros(num_directions, latent_dim))
        self.register_buffer("scales", torch.ones(num_directions))
        self.register_buffer("values", torch.zeros(num_directions))

    @classmethod
    def of(cls, basis: torch.Tensor, scales: torch.Tensor | None = None,
           values: torch.Tensor | None = None, layers: Sequence[int] | None = None) -> "BasisDirections":
        """A set from ``K x d`` vectors (normalised here) and optional scales and values."""
        if basis.ndim != 2:
            raise ValueError(f"a basis is K x d, got shape {tuple(basis.shape)}")
        out = cls(basis.shape[1], basis.shape[0], layers)
        out.basis.copy_(basis / basis.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if scales is not None:
            out.scales.copy_(scales)
        if values is not None:
            out.values.copy_(values)
        return out

    def vectors(self) -> torch.Tensor:
        return self.basis

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        return latent + (alpha * self.scales[index])[:, None] * self.basis[index]


class LayerVectors(DirectionSet):
    """One free vector per direction and per layer of W+ (Enjoy Your Editing's per-layer
    directions): a direction is an ``L x d`` offset of the per-layer codes,

        shift(w+, k, alpha) = w+ + alpha theta_k         (theta_k: one row per layer)

    so each layer may move its own way. Takes ``N x L x d`` latents only (a W+ space).

    Args:
        latent_dim, num_directions: d and K.
        num_layers: L, the generator's per-layer codes; ``layers`` (default: all of them) are
            the ones the set moves.
        init_scale, init_seed: theta starts as ``init_scale`` times a seeded Gaussian.
    """

    kind = "layer_vectors"
    translation = True

    def __init__(self, latent_dim: int, num_directions: int, num_layers: int,
                 init_scale: float = 0.1, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, list(range(num_layers)) if layers is None else layers)
        if self.layers[-1] >= num_layers:
            raise ValueError(f"layers {self.layers} are outside 0..{num_layers - 1}")
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        self.theta = nn.Parameter(init_scale * torch.randn(num_directions, len(self.layers),
                                                           latent_dim, generator=gen))
        self.num_layers, self.init_scale, self.init_seed = num_layers, init_scale, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), num_layers=self.num_layers, init_scale=self.init_scale,
                    init_seed=self.init_seed)

    def vectors(self) -> torch.Tensor:
        """The mean over layers of each direction's offset, normalised (a summary: the set is
        not one vector per direction)."""
        mean = self.theta.mean(1)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        if latent.ndim != 3 or tuple(latent.shape[1:]) != (self.num_layers, self.latent_dim):
            raise ValueError(f"per-layer directions take W+ latents N x {self.num_layers} x "
                             f"{self.latent_dim}, got {tuple(latent.shape)}: use the generator's "
                             "W+ space (generator.space=w+)")
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        offset = alpha[:, None, None] * self.theta[index]
        return latent.index_add(1, self._layers_on(latent.shape[1], latent.device), offset)


class LocalDirections(DirectionSet):
    """Latent-dependent directions (Enjoy Your Editing's local directions): a global vector
    per direction plus a small network's correction at the latent,

        shift(z, k, alpha) = z + alpha (theta_k + f(z)_k)

    with f an MLP whose last layer starts at zero (the set starts as global vectors). On W+
    codes each selected layer's code is moved by its own f.

    Args:
        latent_dim, num_directions: d and K.
        hidden: width of f's hidden layer.
        init_scale, init_seed: theta's start (a seeded Gaussian) and f's initialisation.
        layers: the per-layer codes moved (see ``DirectionSet``).
    """

    kind = "local_mlp"

    def __init__(self, latent_dim: int, num_directions: int, hidden: int = 64,
                 init_scale: float = 0.1, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        with torch.random.fork_rng(devices=[]):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            self.theta = nn.Parameter(init_scale * torch.randn(num_directions, latent_dim))
            self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, num_directions * latent_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        self.hidden, self.init_scale, self.init_seed = hidden, init_scale, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), hidden=self.hidden, init_scale=self.init_scale,
                    init_seed=self.init_seed)

    def vectors(self) -> torch.Tensor:
        """The global parts theta_k, normalised (the local correction depends on the latent)."""
        return self.theta / self.theta.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def direction_at(self, latent: torch.Tensor, index) -> torch.Tensor:
        """Each latent's own direction ``N x d`` (unnormalised: its length is the step of
        alpha = 1)."""
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        local = self.net(latent).view(n, self.num_directions, self.latent_dim)
        return self.theta[index] + local[torch.arange(n, device=latent.device), index]

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        alpha = _as_batch(alpha, latent.shape[0], latent.device, latent.dtype)
        return latent + alpha[:, None] * self.direction_at(latent, index)


PARAMETRISATIONS: dict[str, type[DirectionSet]] = {
    cls.kind: cls for cls in (LinearDirections, OrthoDirections, ProjDirections, RBFWarps,
                              VectorDirections, MLPWalk, BasisDirections, LayerVectors,
                              LocalDirections)
}

BASELINE_KINDS = ("random", "id")


def baseline_set(kind: str, latent_dim: int, num_directions: int, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> LinearDirections:
    """A fixed baseline set: ``"random"`` unit vectors (seeded by ``init_seed``) or ``"id"``, the
    first coordinate axes (at most ``latent_dim``), on the given ``layers``."""
    if kind == "random":
        return LinearDirections(latent_dim, num_directions, init="randn", trainable=False,
                                init_seed=init_seed, layers=layers)
    if kind == "id":
        return LinearDirections(latent_dim, num_directions, init="identity", trainable=False,
                                layers=layers)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINE_KINDS)}")


# ---- plain data: what a directions file may hold ------------------------------------------
_SCALARS = (str, int, float, bool, complex, bytes, type(None))
# Meta entries whose odd values are kept as their repr (configs); elsewhere they are refused.
_LENIENT_META = ("config", "generator_source")


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
    raise ValueError(
        f"Directions.save refuses to write {where} = {shown}: a {type(value).__name__} would not "
        "load with torch.load(weights_only=True); directions files hold only tensors and plain "
        "data (dict, list, tuple, str, int, float, bool, None). Convert it, or keep it under "
        "meta['config'], where other values are stored as their repr")


def _weights_only_reason(err: Exception) -> str:
    """The unpickler's own reason in torch's weights-only error (e.g. "Unsupported global:
    GLOBAL posix.system ...")."""
    text = str(err)
    for marker in ("WeightsUnpickler error:", "from a trusted source."):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return " ".join(text.split("Check the documentation")[0].split())[:300]


def _runs_code(err: Exception) -> bool:
    """Whether torch's weights-only unpickler refused objects (globals, calls): everything it
    refuses but bytes that are no pickle at all."""
    text = str(err)
    return "Weights only load failed" in text and "unsupported operand" not in text.lower()


def _module_device(module, fallback) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in itertools.chain(module.parameters(), module.buffers()):  # a basis: buffers only
        return tensor.device
    return fallback


def class_table(direction_classes: Sequence[int]) -> torch.Tensor:
    """Which stored direction belongs to which class, for class-dependent sets (GANalyze's
    theta(y)): ``direction_classes[j]`` is the class of stored direction j, and the table
    ``(max class + 1) x P`` holds the stored index of each class's p-th direction (-1 where a
    class has none). Every class listed must own the same number P of directions."""
    classes = [operator.index(c) for c in direction_classes]
    if not classes or min(classes) < 0:
        raise ValueError(f"direction_classes must list a class index >= 0 for each stored "
                         f"direction, got {list(direction_classes)}")
    owned = {c: [j for j, k in enumerate(classes) if k == c] for c in sorted(set(classes))}
    per_class = {len(v) for v in owned.values()}
    if len(per_class) != 1:
        raise ValueError(f"direction_classes {classes}: every class must own as many directions "
                         "as the others")
    table = torch.full((max(classes) + 1, per_class.pop()), -1, dtype=torch.long)
    for c, stored in owned.items():
        table[c] = torch.tensor(stored)
    return table


def class_index(table: torch.Tensor, y, index) -> torch.Tensor:
    """The stored index of logical direction ``index`` (an int or ``N`` ints) for each class of
    ``y`` (``N`` class indices), from a ``class_table``; a class without directions, or a
    missing ``y``, is a ValueError that names the classes the directions were made for."""
    made_for = (table[:, 0] >= 0).nonzero().flatten().tolist()
    if y is None:
        raise ValueError(f"these directions depend on the class (one per class of {made_for}): "
                         "pass the classes y of the latents")
    y = torch.as_tensor(y, device=table.device).long().flatten()
    index = _as_batch(index, y.shape[0], table.device, torch.long)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.shape[1]):
        raise ValueError(f"direction index {index.unique().tolist()}: these class-dependent "
                         f"directions have indices 0..{table.shape[1] - 1}")
    inside = (y >= 0) & (y < table.shape[0])
    stored = torch.full_like(y, -1)
    stored[inside] = table[y[inside], index[inside]]
    if (stored < 0).any():
        raise ValueError(f"no direction for class(es) {y[stored < 0].unique().tolist()}: these "
                         f"class-dependent directions were made for classes {made_for}")
    return stored


class Directions:
    """The artifact every method produces; load it with ``Directions.load``.

    Args:
        directions: the parametrisation.
        meta: method, generator identity (``generator``) and how to rebuild it
            (``generator_source``), latent space (``space``), ``layers``, ``alpha_range``,
            config, metrics. ``layers`` always mirrors the set's own layers.
        generator: fills ``generator``, ``generator_source`` and ``space`` from the generator the
            directions were made with (``Directions.generator_meta``).
    """

    def __init__(self, directions: DirectionSet, meta: dict[str, Any] | None = None,
                 generator=None) -> None:
        self.directions = directions.eval()
        self.meta = dict(meta or {})
        if generator is not None:
            self.meta.update(self.generator_meta(generator))
        layers = directions.layers
        self.meta["layers"] = None if layers is None else list(layers)
        identity = self.meta.get("generator") if isinstance(self.meta.get("generator"), Mapping) else {}
        self.meta["space"] = (self.meta.get("space") or identity.get("space")
                              or ("w+" if layers is not None else "z"))
        # Class-dependent sets (GANalyze's theta(y)): the class of each stored direction.
        classes = self.meta.get("direction_classes")
        self._class_table = None
        if classes is not None:
            if len(classes) != directions.num_directions:
                raise ValueError(f"direction_classes names {len(classes)} classes for "
                                 f"{directions.num_directions} stored directions")
            self._class_table = class_table(classes)
        self.path: Path | None = None  # the file it was loaded from
        self.format = DIRECTIONS_FORMAT  # the format of that file (v1 files are upgraded)

    @staticmethod
    def generator_meta(generator) -> dict[str, Any]:
        """The meta entries describing ``generator``: ``generator`` (its full ``identity()``),
        ``generator_source`` (its ``source``: the config that rebuilds it, or None) and
        ``space``."""
        source = getattr(generator, "source", None)
        return {"generator": dict(generator.identity()),
                "generator_source": dict(source) if isinstance(source, Mapping) else source,
                "space": generator.space}

    @property
    def num_directions(self) -> int:
        """Directions a latent can take: for a class-dependent set, those of one class."""
        table = self._class_table
        return self.directions.num_directions if table is None else table.shape[1]

    @property
    def class_dependent(self) -> bool:
        """Whether each latent's direction depends on its class (``shift`` needs ``y``)."""
        return self._class_table is not None

    def stored_index(self, index, y=None):
        """The stored direction of ``index`` for classes ``y`` (``index`` itself for a set that
        does not depend on the class: ``y`` is ignored then)."""
        if self._class_table is None:
            return index
        return class_index(self._class_table, y, index)

    @property
    def latent_dim(self) -> int:
        return self.directions.latent_dim

    @property
    def layers(self) -> list[int] | None:
        return self.directions.layers

    @property
    def space(self) -> str:
        return self.meta["space"]

    def to(self, device) -> "Directions":
        self.directions.to(device)
        return self

    # ---- editing --------------------------------------------------------------------------
    @torch.no_grad()
    def shift(self, latent: torch.Tensor, index, alpha, y=None) -> torch.Tensor:
        """Latents moved along direction ``index`` by ``alpha``; ``y``: the latents' classes,
        which pick each latent's own direction in a class-dependent set (ignored otherwise)."""
        return self.directions.shift(latent, self.stored_index(index, y), alpha)

    @torch.no_grad()
    def apply(self, latent: torch.Tensor, edits, y=None) -> torch.Tensor:
        """Several edits at once: ``edits`` is a list of ``(index, alpha)`` pairs (alpha a float
        or ``N`` floats), applied in order, each from the previous result. Linear edits commute
        (their offsets add up); non-linear ones (warps, walks, norm-keeping vectors) are walked
        one after the other, so their order matters. ``y``: as for ``shift``."""
        return self.directions.apply(
            latent, [(self.stored_index(index, y), alpha) for index, alpha in edit_pairs(edits)])

    @torch.no_grad()
    def traverse(self, latent: torch.Tensor, index: int, alphas, y=None) -> torch.Tensor:
        """Latents ``N x len(alphas) x d`` (``N x len(alphas) x L x d`` for W+ latents) along
        direction ``index`` (each alpha walked from the start: non-linear paths re-evaluate their
        direction along the way). ``y``: as for ``shift``."""
        return torch.stack([self.shift(latent, index, float(a), y) for a in alphas], dim=1)

    # ---- rendering ------------------------------------------------------------------------
    @torch.no_grad()
    def render_traversal(self, generator, latents: torch.Tensor, index: int, alphas,
                         y: torch.Tensor | None = None, batch_size: int = 64,
                         device=None) -> torch.Tensor:
        """Images ``N x len(alphas) x 3 x H x W`` of direction ``index``: for each latent (seed
        major) its alphas in order, each walked from the latent as ``traverse`` does. The
        latents go through ``generator(latent, y)`` in chunks of ``batch_size``, ``y`` (``N``
        class indices, or None) repeated for each alpha. Images are collected on ``device``
        (default: the generator's)."""
        return self._render(generator, latents, [index], alphas, y, batch_size, device)[0]

    @torch.no_grad()
    def traversal_rows(self, generator, latents: torch.Tensor, indices, alphas,
                       y: torch.Tensor | None = None, batch_size: int = 64,
                       device=None) -> torch.Tensor:
        """Images ``len(indices) x (N * len(alphas)) x 3 x H x W``: one row per direction index,
        each row every latent's alphas (seed-major, as ``render_traversal``). For a grid:
        ``save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1])``."""
        images = self._render(generator, latents, indices, alphas, y, batch_size, device)
        return images.flatten(1, 2)

    def _render(self, generator, latents, indices, alphas, y, batch_size, device) -> torch.Tensor:
        alphas = [float(a) for a in alphas]
        indices = [int(k) for k in indices]
        if not alphas or not indices:
            raise ValueError("a traversal needs at least one alpha and one direction index")
        bad = [k for k in indices if not 0 <= k < self.num_directions]
        if bad:
            raise ValueError(f"direction indices {bad}: these directions have indices "
                             f"0..{self.num_directions - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = latents.shape[0]
        own = _module_device(self.directions, latents.device)
        target = _module_device(generator, latents.device)
        if y is not None:
            y = torch.as_tensor(y)
            if y.shape != (n,):
                raise ValueError(f"y must hold one class index per latent ({n}), got shape "
                                 f"{tuple(y.shape)}")
        # every direction's traversal: K x N x A latents, flattened direction, seed, alpha
        path = torch.stack([self.traverse(latents.to(own), k, alphas,
                                          None if y is None else y.to(own)) for k in indices])
        path = path.flatten(0, 2)
        if y is not None:
            y = y.to(target).repeat_interleave(len(alphas)).repeat(len(indices))
        chunks = []
        for start in range(0, path.shape[0], batch_size):
            chunk = path[start:start + batch_size].to(target)
            images = generator(chunk) if y is None else generator(chunk, y[start:start + batch_size])
            chunks.append(images if device is None else images.to(device))
        images = torch.cat(chunks)
        return images.reshape(len(indices), n, len(alphas), *images.shape[1:])

    # ---- the alpha range ------------------------------------------------------------------
    def alpha_range(self, default: float | None = None) -> tuple[float, str]:
        """``(r, how)``: the largest |alpha| the directions were trained on and where it comes
        from: ``(recorded, "recorded")``; for a file that records none, ``(default, "default
        (the file records no alpha_range)")``, or a ValueError when ``default`` is None."""
        value = self.meta.get("alpha_range")
        if value is not None:
            return float(value), "recorded"
        if default is None:
            raise ValueError(
                f"{self.path or 'these directions'} record no alpha_range (the |alpha| their "
                "method trained on; only files from before it was recorded lack it): give the "
                "alphas explicitly instead of 'auto' (e.g. edit.py alphas=[-3,0,3], evaluate.py "
                "evaluation.settings.alpha=1.5)")
        return float(default), "default (the file records no alpha_range)"

    # ---- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write (temporary file, then rename): a failure keeps the previous file. The
        metadata is made plain first (numpy numbers, paths and configs converted; other objects
        kept as their repr under ``config`` and ``generator_source``, refused elsewhere), and the
        file is checked to load with ``torch.load(weights_only=True)`` before it is written."""
        meta = {}
        for key, value in self.meta.items():
            if not isinstance(key, str):
                _refuse(key, "a meta key")
            meta[key] = _plain(value, f"meta[{key!r}]", lenient=key in _LENIENT_META)
        payload = {
            "format": DIRECTIONS_FORMAT,
            "kind": self.directions.kind,
            "config": _plain(self.directions.config(), "the direction config", lenient=False),
            "state_dict": {k: v.detach().cpu() for k, v in self.directions.state_dict().items()},
            "meta": meta,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - never write a file that cannot be read back
            raise ValueError(f"Directions.save refuses to write {path}: it would not load with "
                             f"torch.load(weights_only=True) ({_weights_only_reason(err)})") from None
        return atomic_write(path, lambda handle: handle.write(data))

    @classmethod
    def load(cls, path: str | Path, generator=None, map_location: str = "cpu") -> "Directions":
        """Load a directions file (v2, or v1 upgraded in memory) with
        ``torch.load(weights_only=True)``: a file holding anything but tensors and plain data
        is refused unread. With ``generator``, refuse one made for another generator."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"directions file not found: {path} (a run writes "
                                    "outputs/<run_name>/directions.pt at the end of training)")
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            reason = _weights_only_reason(err)
            if not _runs_code(err):
                raise ValueError(f"{path} is not a readable torch file ({reason}); expected a "
                                 f"directions file ({DIRECTIONS_FORMAT})") from None
            raise ValueError(
                f"{path}: Directions.load refuses to unpickle this file: it holds objects other "
                f"than tensors and plain data ({reason}), and unpickling those may run code; "
                "directions files hold only tensors and plain data. Do not load it elsewhere "
                "either unless you trust its origin") from None
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
            raise ValueError(f"{path} is not a readable torch file ({type(err).__name__}: {err}); "
                             f"expected a directions file ({DIRECTIONS_FORMAT})") from None
        keys = set(blob) if isinstance(blob, dict) else set()
        fmt = blob.get("format") if isinstance(blob, dict) else None
        if fmt not in READABLE_FORMATS or keys != _KEYS:
            if isinstance(fmt, str) and fmt.startswith("latent-directions/directions/") \
                    and fmt not in READABLE_FORMATS:
                raise ValueError(f"{path} is a directions file of format {fmt!r}, which this "
                                 f"version of the project does not read (it reads "
                                 f"{list(READABLE_FORMATS)}): update the project")
            raise ValueError(f"{path} is not a directions file ({DIRECTIONS_FORMAT}): missing "
                             f"keys {sorted(_KEYS - keys)}, unexpected keys {sorted(keys - _KEYS)}")
        if blob["kind"] not in PARAMETRISATIONS:
            raise ValueError(f"{path}: unknown direction kind {blob['kind']!r}; "
                             f"known: {sorted(PARAMETRISATIONS)}")
        try:
            directions = PARAMETRISATIONS[blob["kind"]](**blob["config"])
        except TypeError as err:
            raise ValueError(f"{path}: the {blob['kind']} config {blob['config']} does not fit "
                             f"this version's parametrisation ({err})") from None
        directions.load_state_dict(blob["state_dict"])
        meta = dict(blob["meta"] or {})
        if fmt == DIRECTIONS_FORMAT_V1:  # v1: every layer, the space recorded or z
            meta.setdefault("layers", None)
            meta["space"] = meta.get("space") or "z"
        loaded = cls(directions, meta)
        loaded.path, loaded.format = path, fmt
        if generator is not None:
            loaded.check_generator(generator, source=str(path))
        return loaded

    # ---- the generator --------------------------------------------------------------------
    def made_for(self) -> str:
        """The generator these directions were made for, in words (its rebuild config when
        recorded)."""
        identity = self.meta.get("generator") if isinstance(self.meta.get("generator"), Mapping) else {}
        source = self.meta.get("generator_source")
        if isinstance(source, Mapping) and source:
            shown = ", ".join(f"{k}={v}" for k, v in source.items() if k != "_target_")
            return f"generator {identity.get('name')!r} from {shown or source}"
        sha = identity.get("sha256")
        return (f"generator {identity.get('name')!r} ({identity.get('adapter')}, "
                f"{identity.get('space', self.space)} space"
                + (f", sha256 {sha[:12]}..." if sha else "") + ")")

    def check_generator(self, generator, source: str = "these directions") -> None:
        """Refuse a generator other than the one the directions were made for: another latent
        size, or any identity field recorded in the file that differs (sha256, adapter, space,
        latent_dim, num_layers, truncation, num_classes; the Z- and W-space views of one
        checkpoint are different generators); per-layer directions need W+ latents."""
        name = getattr(generator, "name", type(generator).__name__)
        if self.latent_dim != generator.latent_dim:
            raise ValueError(f"{source} has directions in a {self.latent_dim}-d latent space, but "
                             f"generator {name!r} takes {generator.latent_dim}-d latents: use the "
                             f"generator it was made for ({self.made_for()})")
        saved = self.meta.get("generator")
        if isinstance(saved, Mapping) and hasattr(generator, "identity"):
            mismatch = identity_mismatch(dict(saved), generator.identity())
            if mismatch:
                def show(key, value):
                    return f"{value[:12]}..." if key == "sha256" and isinstance(value, str) else repr(value)

                fields = "; ".join(f"{k} {show(k, a)} in the file vs {show(k, b)} now"
                                   for k, (a, b) in mismatch.items())
                raise ValueError(f"{source} was made for generator {saved.get('name')!r}, not for "
                                 f"{name!r}: {fields}; use the generator it was made for "
                                 f"({self.made_for()})")
        classes = self.meta.get("direction_classes")
        num_classes = getattr(generator, "num_classes", None)
        if classes is not None and (not num_classes or max(classes) >= num_classes):
            raise ValueError(f"{source} holds class-dependent directions for classes up to "
                             f"{max(classes)}, but generator {name!r} has "
                             f"{num_classes or 'no'} classes: use the generator it was made for "
                             f"({self.made_for()})")
        layers = self.directions.layers
        if layers is not None:
            num_layers = getattr(generator, "num_layers", 1)
            if getattr(generator, "space", None) != "w+":
                raise ValueError(f"{source} holds directions on "
                                 f"{describe_layers(layers, num_layers)} of per-layer codes: they "
                                 f"need W+ latents, but generator {name!r} edits its "
                                 f"{getattr(generator, 'space', '?')!r} space; load it with "
                                 "generator.space=w+")
            if layers[-1] >= num_layers:
                raise ValueError(f"{source} holds directions on layers {layers}, but generator "
                                 f"{name!r} has {num_layers} layers: use the generator it was "
                                 f"made for ({self.made_for()})")
