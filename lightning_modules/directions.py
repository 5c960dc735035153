"""The Directions artifact and the direction parametrisations it can hold.

Every method ends with a ``Directions`` object saved as ``directions.pt``: a parametrisation
(an ``nn.Module`` that knows how to ``shift(latent, index, alpha)``) plus metadata (method,
generator identity and hash, latent space, layers, config, metrics). Loading one never needs a
method's training code: the parametrisations live here, and a LightningModule imports its
parametrisation from this file.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.io import atomic_torch_save

DIRECTIONS_FORMAT = "latent-directions/directions/v1"


def _as_batch(value, n: int, device, dtype) -> torch.Tensor:
    tensor = torch.as_tensor(value, device=device, dtype=dtype)
    return tensor.expand(n) if tensor.ndim == 0 else tensor


class DirectionSet(nn.Module):
    """Base of the parametrisations: ``num_directions`` directions in a ``latent_dim`` space.

    ``shift(latent, index, alpha)`` moves each latent ``N x d`` along direction ``index`` (an int
    or ``N`` ints) by ``alpha`` (a float or ``N`` floats). Linear sets add ``alpha * v``.
    """

    kind: str = "base"

    def __init__(self, latent_dim: int, num_directions: int) -> None:
        super().__init__()
        self.latent_dim, self.num_directions = latent_dim, num_directions

    def config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "num_directions": self.num_directions}

    def vectors(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Unit directions ``K x d`` (linear sets)."""
        raise NotImplementedError

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        n = latent.shape[0]
        index = _as_batch(index, n, latent.device, torch.long)
        alpha = _as_batch(alpha, n, latent.device, latent.dtype)
        return latent + alpha[:, None] * self.vectors()[index]


class LinearDirections(DirectionSet):
    """Free directions, each normalised to unit length (Voynov's "linear").

    Args:
        latent_dim: size of the latent space.
        num_directions: K.
        init: ``"randn"`` (Gaussian columns) or ``"identity"`` (the first K coordinate axes).
        trainable: False keeps the directions fixed (the "random" and "id" baselines).
        init_seed: seed of the random initialisation (kept so a baseline is reproducible).
    """

    kind = "linear"

    def __init__(self, latent_dim: int, num_directions: int, init: str = "randn",
                 trainable: bool = True, init_seed: int | None = None) -> None:
        super().__init__(latent_dim, num_directions)
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

    def __init__(self, latent_dim: int, num_directions: int | None = None) -> None:
        num_directions = latent_dim if num_directions is None else num_directions
        if num_directions != latent_dim:
            raise ValueError(f"ortho directions form a basis: num_directions must equal the "
                             f"latent size {latent_dim}, got {num_directions}; use "
                             "directions_type=linear for another count")
        super().__init__(latent_dim, num_directions)
        self.skew = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def vectors(self) -> torch.Tensor:
        return torch.linalg.matrix_exp(self.skew - self.skew.T)


class ProjDirections(DirectionSet):
    """Voynov's "proj": a free linear map with bias, its output rescaled to the shift's size.

    ``shift(z, k, a) = z + |a| * u / ||u||`` with ``u = a * W[k] + b``: with a zero bias it is a
    linear direction; the bias lets the two signs of a shift point in different directions.
    """

    kind = "proj"

    def __init__(self, latent_dim: int, num_directions: int) -> None:
        super().__init__(latent_dim, num_directions)
        self.weight = nn.Parameter(torch.randn(num_directions, latent_dim))
        self.bias = nn.Parameter(torch.zeros(latent_dim))

    def vectors(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
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
    goes to 0 the gradient tends to 4 gamma sum_j v_j: a linear direction.

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
    """

    kind = "warped"

    def __init__(self, latent_dim: int, num_directions: int, num_dipoles: int = 32,
                 gamma: float | None = None, learn_gammas: bool = True, learn_alphas: bool = False,
                 radii: tuple[float, float] | list[float] = (1.0, 4.0), traversal_step: float = 0.25,
                 init_seed: int | None = None) -> None:
        super().__init__(latent_dim, num_directions)
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

    def step(self, latent: torch.Tensor, index, eps) -> torch.Tensor:
        """One step of size ``eps`` along the unit gradient of warp ``index``."""
        eps = _as_batch(eps, latent.shape[0], latent.device, latent.dtype)
        grad = self.gradient(latent, index)
        return latent + eps[:, None] * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        alpha = _as_batch(alpha, latent.shape[0], latent.device, latent.dtype)
        steps = max(1, math.ceil(float(alpha.abs().max()) / self.traversal_step)) if alpha.numel() else 1
        for _ in range(steps):
            latent = self.step(latent, index, alpha / steps)
        return latent


class VectorDirections(DirectionSet):
    """Free, unnormalised vectors theta_k: their length sets how far alpha = 1 goes.

        shift(z, k, alpha) = z + alpha theta_k                                (a linear walk)
        shift(z, k, alpha) = (z + alpha theta_k) ||z|| / ||z + alpha theta_k||   (keep_norm)

    GANalyze's transform keeps each latent's norm; GAN Steerability's linear walk does not.
    With one vector per class (``num_directions`` = classes) it is GANalyze's class-dependent
    direction theta(y) = W one_hot(y).

    Args:
        latent_dim, num_directions: d and K.
        init_scale: theta starts as ``init_scale`` times a Gaussian vector.
        keep_norm: rescale each shifted latent to its original norm.
        init_seed: seed of that start.
    """

    kind = "vectors"

    def __init__(self, latent_dim: int, num_directions: int = 1, init_scale: float = 0.1,
                 keep_norm: bool = False, init_seed: int | None = None) -> None:
        super().__init__(latent_dim, num_directions)
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        self.theta = nn.Parameter(init_scale * torch.randn(num_directions, latent_dim, generator=gen))
        self.init_scale, self.keep_norm, self.init_seed = init_scale, keep_norm, init_seed

    def config(self) -> dict[str, Any]:
        return dict(super().config(), init_scale=self.init_scale, keep_norm=self.keep_norm,
                    init_seed=self.init_seed)

    def vectors(self) -> torch.Tensor:
        return self.theta / self.theta.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
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
    walking alpha = a + b (same sign) from z is walking a, then b.

    Args:
        latent_dim: d.
        num_directions: sliders (one pair of nets each).
        hidden: width of the MLPs' hidden layer.
        step_size: the walk length of one application.
        init_seed: seed of the nets' initialisation.
    """

    kind = "walk_mlp"

    def __init__(self, latent_dim: int, num_directions: int = 1, hidden: int = 64,
                 step_size: float = 0.25, init_seed: int | None = None) -> None:
        super().__init__(latent_dim, num_directions)
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

    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
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


PARAMETRISATIONS: dict[str, type[DirectionSet]] = {
    cls.kind: cls for cls in (LinearDirections, OrthoDirections, ProjDirections, RBFWarps,
                              VectorDirections, MLPWalk)
}


class Directions:
    """The artifact every method produces; load it with ``Directions.load``.

    Args:
        directions: the parametrisation.
        meta: method, generator identity, latent space, layers, config, metrics.
    """

    def __init__(self, directions: DirectionSet, meta: dict[str, Any] | None = None) -> None:
        self.directions = directions.eval()
        self.meta = dict(meta or {})

    @property
    def num_directions(self) -> int:
        return self.directions.num_directions

    @property
    def latent_dim(self) -> int:
        return self.directions.latent_dim

    def to(self, device) -> "Directions":
        self.directions.to(device)
        return self

    @torch.no_grad()
    def shift(self, latent: torch.Tensor, index, alpha) -> torch.Tensor:
        return self.directions.shift(latent, index, alpha)

    @torch.no_grad()
    def traverse(self, latent: torch.Tensor, index: int, alphas) -> torch.Tensor:
        """Latents ``N x len(alphas) x d`` along direction ``index`` (each alpha walked from the
        start: non-linear paths re-evaluate their direction along the way)."""
        return torch.stack([self.shift(latent, index, float(a)) for a in alphas], dim=1)

    def save(self, path: str | Path) -> Path:
        """Atomic write (temporary file, then rename): a failure keeps the previous file."""
        return atomic_torch_save({
            "format": DIRECTIONS_FORMAT,
            "kind": self.directions.kind,
            "config": self.directions.config(),
            "state_dict": {k: v.detach().cpu() for k, v in self.directions.state_dict().items()},
            "meta": self.meta,
        }, path)

    @classmethod
    def load(cls, path: str | Path, generator=None, map_location: str = "cpu") -> "Directions":
        """Load a directions file; with ``generator``, refuse one made for another generator."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"directions file not found: {path} (a run writes "
                                    "outputs/<run_name>/directions.pt at the end of training)")
        blob = torch.load(path, map_location=map_location, weights_only=False)
        expected = {"format", "kind", "config", "state_dict", "meta"}
        if not isinstance(blob, dict) or blob.get("format") != DIRECTIONS_FORMAT:
            keys = set(blob) if isinstance(blob, dict) else set()
            raise ValueError(f"{path} is not a directions file ({DIRECTIONS_FORMAT}): missing "
                             f"keys {sorted(expected - keys)}, unexpected keys {sorted(keys - expected)}")
        if blob["kind"] not in PARAMETRISATIONS:
            raise ValueError(f"{path}: unknown direction kind {blob['kind']!r}; "
                             f"known: {sorted(PARAMETRISATIONS)}")
        directions = PARAMETRISATIONS[blob["kind"]](**blob["config"])
        directions.load_state_dict(blob["state_dict"])
        loaded = cls(directions, blob["meta"])
        if generator is not None:
            loaded.check_generator(generator, source=str(path))
        return loaded

    def check_generator(self, generator, source: str = "these directions") -> None:
        made_for = self.meta.get("generator", {})
        if self.latent_dim != generator.latent_dim:
            raise ValueError(f"{source} has directions in a {self.latent_dim}-d latent space, but "
                             f"generator {generator.name!r} takes {generator.latent_dim}-d latents")
        sha = made_for.get("sha256")
        if sha and generator.sha256 and sha != generator.sha256:
            raise ValueError(f"{source} was made for generator {made_for.get('name')!r} "
                             f"(sha256 {sha[:12]}...), not for {generator.name!r} "
                             f"(sha256 {generator.sha256[:12]}...): use the generator it was made for")
