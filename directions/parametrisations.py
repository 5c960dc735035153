"""The direction parametrisations a directions file can hold.

Each is an ``nn.Module`` that knows how to ``shift(latent, index, alpha)``; ``PARAMETRISATIONS``
maps the ``kind`` stored in a file to its class, and a method's LightningModule imports its
parametrisation from here. ``baseline_set`` builds the fixed random and coordinate sets every
evaluation compares against.

Per-layer (W+) directions: a set built with ``layers=[...]`` moves only those per-layer codes of
``N x L x d`` latents and refuses ``N x d`` latents; a set with ``layers=None`` moves ``N x d``
latents, or every layer of ``N x L x d`` ones.

Channel subsets (S space's layer ranges): ``set.on_channels(channels)`` makes a set of
``latent_dim = len(channels)`` move only those coordinates of ``N x D`` latents (the styles of
the chosen style layers); the rest of the latent is returned as it was.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import torch
from torch import nn

from common.errors import UserError
from generators.base import describe_layers


def _as_batch(value, n: int, device, dtype) -> torch.Tensor:
    tensor = torch.as_tensor(value, device=device, dtype=dtype)
    return tensor.expand(n) if tensor.ndim == 0 else tensor


def _check_channels(channels) -> list[int]:
    """A non-empty strictly increasing list of non-negative coordinates."""
    try:
        values = [operator.index(c) for c in channels]
    except TypeError:
        raise UserError(f"channels: give a list of latent coordinates, got {channels!r}") from None
    if not values or values[0] < 0 or any(b <= a for a, b in zip(values, values[1:])):
        raise UserError("channels: give a non-empty increasing list of non-negative coordinates")
    return values


def _check_layers(layers) -> list[int] | None:
    """``None`` (every layer) or a sorted list of distinct layer indices."""
    if layers is None:
        return None
    if isinstance(layers, str):
        raise UserError(f"layers={layers!r}: a direction set takes layer indices; resolve a spec "
                         "such as 'coarse' or '0-3' with generator.layers(spec)")
    if isinstance(layers, torch.Tensor):
        layers = layers.tolist()
    try:
        values = [operator.index(layers)] if isinstance(layers, int) else \
            [operator.index(i) for i in layers]
    except TypeError:
        raise UserError(f"layers={layers!r}: give None (every layer) or a list of layer "
                         "indices (generator.layers(spec) resolves a spec)") from None
    if not values or min(values) < 0:
        raise UserError(f"layers={layers!r}: give None (every layer) or a non-empty list of "
                         "non-negative layer indices")
    return sorted(set(values))


def edit_pairs(edits) -> list[tuple]:
    """``edits`` as a list of ``(index, alpha)`` pairs; a ValueError names one that is not."""
    pairs = []
    for edit in edits:
        try:
            index, alpha = edit
        except (TypeError, ValueError):
            raise UserError(f"an edit is a pair (index, alpha), got {edit!r}") from None
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
        self.channels: list[int] | None = None
        self._layer_index: dict[torch.device, torch.Tensor] = {}
        self._channel_index: dict[torch.device, torch.Tensor] = {}

    def config(self) -> dict[str, Any]:
        config = {"latent_dim": self.latent_dim, "num_directions": self.num_directions,
                  "layers": None if self.layers is None else list(self.layers)}
        if self.channels is not None:
            config["channels"] = list(self.channels)
        return config

    def on_channels(self, channels: Sequence[int]) -> "DirectionSet":
        """Move only the coordinates ``channels`` of ``N x D`` latents (one per latent
        dimension of the set, in order): S space's layer ranges. Returns the set."""
        channels = _check_channels(channels)
        if self.layers is not None:
            raise UserError("a direction set moves per-layer (W+) codes or channels of S, not both")
        if len(channels) != self.latent_dim:
            raise UserError(f"channels: {len(channels)} coordinates for a set of latent size "
                            f"{self.latent_dim}")
        self.channels, self._channel_index = channels, {}
        return self

    def _channels_on(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 2 or latent.shape[1] <= self.channels[-1]:
            raise UserError(f"this {self.kind} direction set moves {len(self.channels)} channels of "
                            f"S latents N x D (D > {self.channels[-1]}), got {tuple(latent.shape)}: "
                            "use the generator's S space (generator.space=s) it was made for")
        index = self._channel_index.get(latent.device)
        if index is None:
            index = self._channel_index[latent.device] = torch.tensor(self.channels, device=latent.device)
        return index

    def vectors(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Unit directions ``K x d`` (linear sets)."""
        raise NotImplementedError

    #: Why a set has no coordinate per direction (``code`` then refuses), or None.
    no_code: str | None = None

    def code(self, latent: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Each latent's coordinate along each direction, ``N x K``: the projection of the
        centred latent ``latent - centre`` onto the unit directions (``vectors``). Per-layer
        latents ``N x L x d`` are read on the set's layers (their mean code; every layer for
        ``layers=None``). The encoder protocol of the ground-truth benchmark takes these codes
        as what each direction's coordinate is (Khrulkov et al., ICML 2021)."""
        if self.no_code:
            raise UserError(f"{self.kind} directions have no coordinate per direction: {self.no_code}")
        codes = self._flat_codes(latent)
        if centre is not None:
            centre = centre.reshape(-1)
            centre = centre[self.channels] if self.channels is not None else centre[-self.latent_dim:]
            codes = codes - centre.to(codes)
        return self.code_of(codes)

    def _flat_codes(self, latent: torch.Tensor) -> torch.Tensor:
        """``N x d``: the latents, or the mean of the set's per-layer codes."""
        if self.channels is not None:
            return latent.index_select(1, self._channels_on(latent))
        if latent.ndim == 2:
            return latent
        if latent.ndim != 3 or latent.shape[2] != self.latent_dim:
            raise UserError(f"this {self.kind} direction set takes latents N x {self.latent_dim} "
                            f"or N x L x {self.latent_dim}, got {tuple(latent.shape)}")
        if self.layers is None:
            return latent.mean(1)
        return latent.index_select(1, self._layers_on(latent.shape[1], latent.device)).mean(1)

    def code_of(self, centred: torch.Tensor) -> torch.Tensor:
        """The coordinates ``N x K`` of centred codes ``N x d`` (linear sets: projections)."""
        return centred @ self.vectors().to(centred).T

    def shift_codes(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        """The shift of codes ``N x d`` (what a parametrisation defines)."""
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        return latent + alpha[:, None] * self.vectors()[index]

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        """Latents ``N x d`` or ``N x L x d`` moved along direction ``index`` by ``alpha``."""
        if latent.ndim == 2 and self.layers is None and self.channels is None:  # the hot path
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
            raise UserError(f"this {self.kind} direction set moves layers {self.layers}, but the "
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
        at the origin is added to the selected layers instead. A set on channels of S applies
        ``fn`` to those coordinates of ``N x D`` latents."""
        if self.channels is not None:
            channels = self._channels_on(latent)
            return latent.index_copy(1, channels, fn(latent.index_select(1, channels), index, alpha))
        if latent.ndim == 2:
            if self.layers is None:
                return fn(latent, index, alpha)
            raise UserError(
                f"this {self.kind} direction set moves {describe_layers(self.layers, -1)} of "
                f"per-layer (W+) codes: it takes latents N x L x {self.latent_dim}, got "
                f"{tuple(latent.shape)}; use the generator's W+ space (generator.space=w+)")
        if latent.ndim != 3 or latent.shape[2] != self.latent_dim:
            raise UserError(f"this {self.kind} direction set takes latents N x {self.latent_dim} "
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
                raise UserError(f"coordinate-axis directions: num_directions ({num_directions}) "
                                 f"cannot exceed the latent size ({latent_dim})")
            weight = torch.eye(latent_dim)[:num_directions]
        elif init == "randn":
            gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
            weight = torch.randn(num_directions, latent_dim, generator=gen)
        else:
            raise UserError(f"unknown init {init!r}: use 'randn' or 'identity'")
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
            raise UserError(f"ortho directions form a basis: num_directions must equal the "
                             f"latent size {latent_dim}, got {num_directions}; use "
                             "method.directions_type=linear for another count")
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
            raise UserError(f"num_dipoles must be at least 1, got {num_dipoles}")
        if traversal_step <= 0:
            raise UserError(f"traversal_step must be positive, got {traversal_step}")
        gamma = 1.0 / latent_dim if gamma is None else gamma
        if gamma <= 0:
            raise UserError(f"gamma must be positive, got {gamma}")
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

    def code(self, latent: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """The warps' potentials f_k(z) (``N x K``): a warp moves along the gradient of its own
        f_k, so f_k is its coordinate (the latents are not centred: the support vectors live in
        the latent space as it is)."""
        flat = self._flat_codes(latent)
        return torch.stack([self.potential(flat, k) for k in range(self.num_directions)], dim=1)

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
        if latent.ndim == 2 and self.layers is None and self.channels is None:
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

    no_code = ("a walk is a chain of learned steps with no potential behind it, so no scalar "
               "measures how far along it a latent lies; the benchmark marks it n/a")
    kind = "walk_mlp"

    def __init__(self, latent_dim: int, num_directions: int = 1, hidden: int = 64,
                 step_size: float = 0.25, init_seed: int | None = None,
                 layers: Sequence[int] | None = None) -> None:
        super().__init__(latent_dim, num_directions, layers)
        if step_size <= 0:
            raise UserError(f"step_size must be positive, got {step_size}")
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
            raise UserError(f"a basis is K x d, got shape {tuple(basis.shape)}")
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
            raise UserError(f"layers {self.layers} are outside 0..{num_layers - 1}")
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        self.theta = nn.Parameter(init_scale * torch.randn(num_directions, len(self.layers),
                                                           latent_dim, generator=gen))
        self.num_layers, self.init_scale, self.init_seed = num_layers, init_scale, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), num_layers=self.num_layers, init_scale=self.init_scale,
                    init_seed=self.init_seed)

    def code(self, latent: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """The projection of the centred per-layer codes (its layers of ``N x L x d``) onto each
        direction's whole ``L x d`` offset, normalised: ``N x K``."""
        if latent.ndim != 3 or tuple(latent.shape[1:]) != (self.num_layers, self.latent_dim):
            raise UserError(f"per-layer directions take W+ latents N x {self.num_layers} x "
                            f"{self.latent_dim}, got {tuple(latent.shape)}")
        selected = latent.index_select(1, self._layers_on(latent.shape[1], latent.device))
        if centre is not None:
            selected = selected - centre.reshape(-1)[-self.latent_dim:].to(selected)
        theta = self.theta.to(selected)
        unit = theta / theta.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
        return torch.einsum("nld,kld->nk", selected, unit)

    def vectors(self) -> torch.Tensor:
        """The mean over layers of each direction's offset, normalised (a summary: the set is
        not one vector per direction)."""
        mean = self.theta.mean(1)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        if latent.ndim != 3 or tuple(latent.shape[1:]) != (self.num_layers, self.latent_dim):
            raise UserError(f"per-layer directions take W+ latents N x {self.num_layers} x "
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


def build_set(kind: str, config: dict[str, Any]) -> DirectionSet:
    """A set of a known ``kind`` from its ``config()`` (channels of S applied after); the
    caller checks ``kind`` first. A config that does not fit the class raises TypeError."""
    config = dict(config)
    channels = config.pop("channels", None)
    made = PARAMETRISATIONS[kind](**config)
    return made if channels is None else made.on_channels(channels)


def baseline_set(kind: str, latent_dim: int, num_directions: int, init_seed: int | None = None,
                 layers: Sequence[int] | None = None, channels: Sequence[int] | None = None
                 ) -> LinearDirections:
    """A fixed baseline set: ``"random"`` unit vectors (seeded by ``init_seed``) or ``"id"``, the
    first coordinate axes (at most ``latent_dim``), on the given ``layers`` (or ``channels``)."""
    if kind == "random":
        fixed = LinearDirections(latent_dim, num_directions, init="randn", trainable=False,
                                 init_seed=init_seed, layers=layers)
    elif kind == "id":
        fixed = LinearDirections(latent_dim, num_directions, init="identity", trainable=False,
                                 layers=layers)
    else:
        raise UserError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINE_KINDS)}")
    return fixed if channels is None else fixed.on_channels(channels)
