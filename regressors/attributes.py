"""Attribute regressors: a timm backbone (from scratch, nothing downloaded) that reads every
factor of an image. They measure what a direction changes (the evaluation's effect matrix),
judge realism through their features (a Frechet distance with no download), and serve as the
assessor of GANalyze-style methods.

A regressor predicts a list of ``Target``s, each read from one column of a ``factors`` tensor:

============  ================  ==========================================================
kind          outputs           loss, and how a prediction is decoded
============  ================  ==========================================================
categorical   ``classes``       cross-entropy; argmax (class probabilities also returned)
continuous    1                 squared error on the value
circular      2 (cos, sin)      squared error on the unit vector of the angle; value in [0, 1)
binary        1 logit           binary cross-entropy; probability of the attribute
============  ================  ==========================================================

A target may be defined only for some classes of a categorical one (the rotation of a circle
is not a factor of its image): ``defined_if=("shape", (0, 2))``. Undefined or missing labels
(NaN in a CSV) do not count in the loss or the scores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.io import atomic_torch_save, check_weights_blob, file_sha256, read_weights_file

REGRESSOR_FORMAT = "latent-directions/regressor/v1"
KINDS = ("categorical", "continuous", "circular", "binary")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# A ResNet-18 layout at a quarter of the width: 2.8 M parameters, about 70 ms for a training
# step of 128 images of 32 x 32 on two CPU cores.
DEFAULT_BACKBONE = "resnet18"
DEFAULT_BACKBONE_KWARGS = {"channels": [32, 64, 128, 256], "stem_width": 32}


@dataclass(frozen=True)
class Target:
    """One predicted attribute.

    Args:
        name: the factor's name (a column of ``factors``).
        kind: ``categorical``, ``continuous``, ``circular`` (period 1) or ``binary``.
        classes: number of classes (categorical only).
        defined_if: ``(categorical target name, classes)`` where this target has a meaning.
    """

    name: str
    kind: str
    classes: int = 0
    defined_if: tuple[str, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"target {self.name!r}: unknown kind {self.kind!r}; use one of {KINDS}")
        if self.kind == "categorical" and self.classes < 2:
            raise UserError(f"categorical target {self.name!r} needs classes >= 2")

    @property
    def outputs(self) -> int:
        return {"categorical": self.classes, "continuous": 1, "circular": 2, "binary": 1}[self.kind]

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | "Target") -> "Target":
        if isinstance(spec, Target):
            return spec
        spec = dict(spec)
        if spec.get("defined_if") is not None:
            name, classes = spec["defined_if"]
            spec["defined_if"] = (str(name), tuple(int(c) for c in classes))
        return cls(**spec)


def world_targets() -> list[Target]:
    """The targets of the built-in shapes world, in the order of its factors."""
    from datamodules.world import FACTOR_KINDS, FACTORS, SHAPES

    not_circle = ("shape", tuple(i for i, s in enumerate(SHAPES) if s != "circle"))
    return [Target(name, FACTOR_KINDS[name], len(SHAPES) if name == "shape" else 0,
                   not_circle if name == "rotation" else None) for name in FACTORS]


def resolve_targets(targets: str | Sequence[dict | Target]) -> list[Target]:
    """``"world"`` or a list of target specs."""
    if targets == "world":
        return world_targets()
    if isinstance(targets, str):
        raise UserError(f"targets={targets!r}: use 'world' or a list of target specs")
    resolved = [Target.from_dict(t) for t in targets]
    names = [t.name for t in resolved]
    if len(set(names)) != len(names) or not names:
        raise UserError(f"targets need distinct names and at least one target, got {names}")
    for t in resolved:
        if t.defined_if is not None and t.defined_if[0] not in names:
            raise UserError(f"target {t.name!r} is defined_if {t.defined_if[0]!r}, which is not a target")
    return resolved


def circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance on a circle of period 1, in [0, 0.5]."""
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1.0 - d)


class AttributeRegressor(nn.Module):
    """A timm backbone with one linear head for all targets.

    Args:
        targets: ``"world"`` or target specs (see ``Target``).
        backbone: a timm model name, created with ``pretrained=False``.
        backbone_kwargs: passed to ``timm.create_model`` (channels, stem width, ...).
        resolution: side of the input images (they are resized to it if they differ).
    """

    def __init__(self, targets: str | Sequence[dict | Target] = "world",
                 backbone: str = DEFAULT_BACKBONE, backbone_kwargs: dict | None = None,
                 resolution: int = 32) -> None:
        super().__init__()
        import timm

        self.targets = resolve_targets(targets)
        self.backbone = backbone
        self.backbone_kwargs = dict(DEFAULT_BACKBONE_KWARGS if backbone_kwargs is None
                                    else backbone_kwargs)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.backbone_kwargs.items()}
        self.resolution = resolution
        self.trunk = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)
        self.head = nn.Linear(self.trunk.num_features, sum(t.outputs for t in self.targets))
        self.sha256: str | None = None
        self._index = {t.name: i for i, t in enumerate(self.targets)}

    # ---- names ---------------------------------------------------------------------------
    @property
    def factor_names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def num_features(self) -> int:
        return self.trunk.num_features

    def check_factors(self, names: Sequence[str], source: str = "the world") -> None:
        """Refuse a regressor that does not read the factors ``names`` (in that order)."""
        if list(names) != self.factor_names:
            raise UserError(f"the regressor predicts factors {self.factor_names}, but {source} has "
                             f"factors {list(names)}: train a regressor on these factors "
                             "(python train.py experiment=regressor_shapes, or "
                             "experiment=regressor_folder for an image folder)")

    # ---- forward -------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution),
                                   mode="bilinear", antialias=True, align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``N x num_features`` of images in [-1, 1]."""
        return self.trunk(self._prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``N x sum(outputs)``."""
        return self.head(self.features(images))

    def split(self, raw: torch.Tensor) -> list[torch.Tensor]:
        return list(raw.split([t.outputs for t in self.targets], dim=1))

    # ---- labels and loss -----------------------------------------------------------------
    def label_mask(self, factors: torch.Tensor) -> torch.Tensor:
        """``N x F`` bool: which labels are present and meaningful."""
        mask = ~torch.isnan(factors)
        for i, t in enumerate(self.targets):
            if t.defined_if is not None:
                j = self._index[t.defined_if[0]]
                allowed = torch.tensor(t.defined_if[1], device=factors.device, dtype=factors.dtype)
                mask[:, i] &= torch.isin(factors[:, j].round(), allowed)
        return mask

    def loss(self, raw: torch.Tensor, factors: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over targets of each target's mean loss over its present labels."""
        mask = self.label_mask(factors)
        labels = torch.nan_to_num(factors)
        parts: dict[str, torch.Tensor] = {}
        for i, (t, out) in enumerate(zip(self.targets, self.split(raw))):
            m = mask[:, i].float()
            y = labels[:, i]
            if t.kind == "categorical":
                each = F.cross_entropy(out, y.round().long().clamp(0, t.classes - 1), reduction="none")
            elif t.kind == "continuous":
                each = (out[:, 0] - y) ** 2
            elif t.kind == "circular":
                angle = 2 * math.pi * y
                each = ((out - torch.stack([angle.cos(), angle.sin()], 1)) ** 2).sum(1)
            else:
                each = F.binary_cross_entropy_with_logits(out[:, 0], (y > 0).float(), reduction="none")
            parts[t.name] = (each * m).sum() / m.sum().clamp_min(1.0)
        return torch.stack(list(parts.values())).sum(), parts

    # ---- predictions ---------------------------------------------------------------------
    def decode(self, raw: torch.Tensor) -> dict[str, Any]:
        """``values`` N x F (class index, value, angle in [0, 1) or probability), ``valid``
        N x F (defined according to the predicted classes), ``probs`` {name: N x classes}."""
        values, probs = [], {}
        for t, out in zip(self.targets, self.split(raw)):
            if t.kind == "categorical":
                p = out.softmax(1)
                probs[t.name] = p
                values.append(p.argmax(1).to(raw.dtype))
            elif t.kind == "continuous":
                values.append(out[:, 0])
            elif t.kind == "circular":
                values.append((torch.atan2(out[:, 1], out[:, 0]) / (2 * math.pi)) % 1.0)
            else:
                values.append(out[:, 0].sigmoid())
        values = torch.stack(values, 1)
        return {"values": values, "valid": self.label_mask(values), "probs": probs}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, Any]:
        return self.decode(self(images))

    @torch.no_grad()
    def features_and_predictions(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Penultimate features and decoded predictions from one pass of the trunk."""
        features = self.features(images)
        return features, self.decode(self.head(features))

    # ---- weights files -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"targets": [asdict(t) for t in self.targets], "backbone": self.backbone,
                "backbone_kwargs": self.backbone_kwargs, "resolution": self.resolution}

    def save(self, path: str | Path, info: dict[str, Any] | None = None) -> Path:
        """Atomic write; weights are stored in half precision (half the size, same scores)."""
        state = {k: (v.half() if v.is_floating_point() else v).detach().cpu()
                 for k, v in self.state_dict().items()}
        return atomic_torch_save({"format": REGRESSOR_FORMAT, "config": self.config(),
                                  "state_dict": state, "info": dict(info or {})}, path)


class AttributeAssessor(nn.Module):
    """One scalar read from a regressor, as a differentiable score of images (GANalyze's
    assessor, InterFaceGAN's scores):

    - ``name`` of a continuous factor: its value; of a binary one: its probability;
    - ``name=k`` of a categorical factor: the probability of class k (``shape=0``);
    - ``name.cos`` / ``name.sin`` of a circular factor: that component of its angle.

    Args:
        regressor: a (frozen) AttributeRegressor.
        factor: the spec above.
    """

    def __init__(self, regressor: AttributeRegressor, factor: str) -> None:
        super().__init__()
        kinds = {t.name: t for t in regressor.targets}
        name, part = factor, None
        for sep in ("=", "."):
            if sep in factor and factor.split(sep)[0] in kinds:
                name, part = factor.split(sep, 1)
        choices = [spec for t in regressor.targets for spec in _scalar_specs(t)]
        if name not in kinds:
            raise UserError(f"the regressor has no factor {name!r}; its scalar reads: {choices}")
        target = kinds[name]
        if factor not in choices:
            raise UserError(f"factor {factor!r}: {name!r} is {target.kind}, read it as one of "
                             f"{_scalar_specs(target)} (scalar reads of this regressor: {choices})")
        self.regressor, self.factor, self.kind = regressor, factor, target.kind
        self.position = regressor.factor_names.index(name)
        self.part = part

    def train(self, mode: bool = True) -> "AttributeAssessor":
        # Frozen for good: Lightning's .train() on the method must not switch batch-norm to
        # batch statistics (nor update the running ones).
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.read(self.regressor(images))

    def read(self, outputs: torch.Tensor) -> torch.Tensor:
        """The score from the regressor's raw outputs (several assessors of one regressor share
        one forward pass)."""
        out = self.regressor.split(outputs)[self.position]
        if self.kind == "categorical":
            return out.softmax(1)[:, int(self.part)]
        if self.kind == "circular":
            unit = F.normalize(out, dim=1)
            return unit[:, 0 if self.part == "cos" else 1]
        return out[:, 0].sigmoid() if self.kind == "binary" else out[:, 0]


def _scalar_specs(target: Target) -> list[str]:
    """The scalar reads of a target (see AttributeAssessor)."""
    if target.kind == "categorical":
        return [f"{target.name}={k}" for k in range(target.classes)]
    if target.kind == "circular":
        return [f"{target.name}.cos", f"{target.name}.sin"]
    return [target.name]


def load_regressor(path: str | Path, map_location: str = "cpu") -> AttributeRegressor:
    """A frozen regressor (eval mode) from a weights file, or a shipped name in regressors/weights/."""
    path, blob = read_weights_file(
        path, WEIGHTS_DIR, "regressor", "train one with `python train.py "
        "experiment=regressor_shapes` and pass <run>/regressor.pt", map_location)
    check_weights_blob(blob, path, REGRESSOR_FORMAT, "regressor")
    model = AttributeRegressor(**blob["config"])
    result = model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                    for k, v in blob["state_dict"].items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{path}: the weights do not fit the regressor's architecture: missing "
                         f"keys {result.missing_keys}, unexpected keys {result.unexpected_keys}")
    model.sha256, model.path = file_sha256(path), str(path)
    model.info = blob["info"]
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
