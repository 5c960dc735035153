"""The Directions artifact every method produces, saved as ``directions.pt``.

A ``Directions`` object is a parametrisation (``directions.parametrisations``) plus metadata:
method, generator identity and how to rebuild it, latent space, layers, alpha range, config,
metrics. Loading one never needs a method's training code, and never runs anything in the file
(``directions.reader``).

Class-dependent directions (GANalyze's theta(y) on a conditional generator): ``meta
["direction_classes"]`` names the class of each stored direction, and the artifact's
``shift`` / ``apply`` / ``traverse`` / renderers take the latents' classes ``y`` and move each
latent along its own class's direction (``num_directions`` counts the directions of one class).
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch

from common.errors import UserError
from common.io import atomic_write
from directions.parametrisations import PARAMETRISATIONS, DirectionSet, _as_batch, build_set, edit_pairs
from directions.reader import DIRECTIONS_FORMAT, DIRECTIONS_FORMAT_V1, encode, read
from generators.base import describe_layers, identity_mismatch


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
        raise UserError(f"direction_classes must list a class index >= 0 for each stored "
                         f"direction, got {list(direction_classes)}")
    owned = {c: [j for j, k in enumerate(classes) if k == c] for c in sorted(set(classes))}
    per_class = {len(v) for v in owned.values()}
    if len(per_class) != 1:
        raise UserError(f"direction_classes {classes}: every class must own as many directions "
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
        raise UserError(f"these directions depend on the class (one per class of {made_for}): "
                         "pass the classes y of the latents")
    y = torch.as_tensor(y, device=table.device).long().flatten()
    index = _as_batch(index, y.shape[0], table.device, torch.long)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.shape[1]):
        raise UserError(f"direction index {index.unique().tolist()}: these class-dependent "
                         f"directions have indices 0..{table.shape[1] - 1}")
    inside = (y >= 0) & (y < table.shape[0])
    stored = torch.full_like(y, -1)
    stored[inside] = table[y[inside], index[inside]]
    if (stored < 0).any():
        raise UserError(f"no direction for class(es) {y[stored < 0].unique().tolist()}: these "
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
                raise UserError(f"direction_classes names {len(classes)} classes for "
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
    @property
    def no_code(self) -> str | None:
        """Why these directions have no coordinate per direction (``code`` refuses), or None."""
        if self.class_dependent:
            return "class-dependent directions give each class its own set"
        return self.directions.no_code

    @torch.no_grad()
    def code(self, latent: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Each latent's coordinate along each direction (``N x K``; see
        ``DirectionSet.code``): projections of the centred latent for vector sets, the
        potentials for RBF warps; a ``UserError`` for sets without one (``no_code``)."""
        if self.class_dependent:
            raise UserError(f"{self.path or 'these directions'}: {self.no_code}; the benchmark's "
                            "codes need one set of directions")
        return self.directions.code(latent, centre)

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
            raise UserError("a traversal needs at least one alpha and one direction index")
        bad = [k for k in indices if not 0 <= k < self.num_directions]
        if bad:
            raise UserError(f"direction indices {bad}: these directions have indices "
                             f"0..{self.num_directions - 1}")
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        n = latents.shape[0]
        own = _module_device(self.directions, latents.device)
        target = _module_device(generator, latents.device)
        if y is not None:
            y = torch.as_tensor(y)
            if y.shape != (n,):
                raise UserError(f"y must hold one class index per latent ({n}), got shape "
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
            raise UserError(
                f"{self.path or 'these directions'} record no alpha_range (the |alpha| their "
                "method trained on; only files from before it was recorded lack it): give the "
                "alphas explicitly instead of 'auto' (e.g. edit.py alphas=[-3,0,3], evaluate.py "
                "evaluation.settings.alpha=1.5)")
        return float(default), "default (the file records no alpha_range)"

    # ---- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write (temporary file, then rename): a failure keeps the previous file. The
        metadata is made plain first and the bytes are checked to load with
        ``torch.load(weights_only=True)`` before they are written (``directions.reader.encode``)."""
        data = encode(self.directions.kind, self.directions.config(), self.directions.state_dict(),
                      self.meta, path)
        return atomic_write(path, lambda handle: handle.write(data))

    @classmethod
    def load(cls, path: str | Path, generator=None, map_location: str = "cpu") -> "Directions":
        """Load a directions file (v2, or v1 upgraded in memory) with
        ``torch.load(weights_only=True)``: a file holding anything but tensors and plain data
        is refused unread (``directions.reader.read``). With ``generator``, refuse one made for
        another generator."""
        path = Path(path)
        blob = read(path, map_location)
        if blob["kind"] not in PARAMETRISATIONS:
            raise UserError(f"{path}: unknown direction kind {blob['kind']!r}; "
                            f"known: {sorted(PARAMETRISATIONS)}")
        try:
            directions = build_set(blob["kind"], blob["config"])
        except TypeError as err:
            raise UserError(f"{path}: the {blob['kind']} config {blob['config']} does not fit "
                            f"this version's parametrisation ({err})") from None
        directions.load_state_dict(blob["state_dict"])
        meta = dict(blob["meta"] or {})
        if blob["format"] == DIRECTIONS_FORMAT_V1:  # v1: every layer, the space recorded or z
            meta.setdefault("layers", None)
            meta["space"] = meta.get("space") or "z"
        loaded = cls(directions, meta)
        loaded.path, loaded.format = path, blob["format"]
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
        if getattr(self.directions, "channels", None) is None and self.latent_dim != generator.latent_dim:
            raise UserError(f"{source} has directions in a {self.latent_dim}-d latent space, but "
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
                raise UserError(f"{source} was made for generator {saved.get('name')!r}, not for "
                                 f"{name!r}: {fields}; use the generator it was made for "
                                 f"({self.made_for()})")
        classes = self.meta.get("direction_classes")
        num_classes = getattr(generator, "num_classes", None)
        if classes is not None and (not num_classes or max(classes) >= num_classes):
            raise UserError(f"{source} holds class-dependent directions for classes up to "
                             f"{max(classes)}, but generator {name!r} has "
                             f"{num_classes or 'no'} classes: use the generator it was made for "
                             f"({self.made_for()})")
        layers = self.directions.layers
        if layers is not None:
            num_layers = getattr(generator, "num_layers", 1)
            if getattr(generator, "space", None) != "w+":
                raise UserError(f"{source} holds directions on "
                                 f"{describe_layers(layers, num_layers)} of per-layer codes: they "
                                 f"need W+ latents, but generator {name!r} edits its "
                                 f"{getattr(generator, 'space', '?')!r} space; load it with "
                                 "generator.space=w+")
            if layers[-1] >= num_layers:
                raise UserError(f"{source} holds directions on layers {layers}, but generator "
                                 f"{name!r} has {num_layers} layers: use the generator it was "
                                 f"made for ({self.made_for()})")
        channels = getattr(self.directions, "channels", None)
        if channels is not None and (getattr(generator, "space", None) != "s"
                                     or channels[-1] >= generator.latent_dim):
            raise UserError(f"{source} holds directions on {len(channels)} channels of S space, "
                            f"but generator {name!r} edits its {getattr(generator, 'space', '?')!r} "
                            f"space of size {getattr(generator, 'latent_dim', '?')}: load it with "
                            f"generator.space=s ({self.made_for()})")
