"""The project's own CLIP, trained on the shapes world (``python train.py experiment=clip_shapes``).

Image encoder: the shapes regressor's trunk layout (a timm ResNet-18 at a quarter of the width,
created with ``pretrained=False``) with a linear projection. Text encoder: word embeddings of the
closed caption vocabulary (``clip_models/captions.py``) plus learned positions, a small
pre-norm Transformer, the mean over the words, a projection. Both embeddings are normalised and
compared with a learned temperature (Radford et al., 2021):

    L = (CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2

Weights files (``clip_models/weights/world_clip32.pt``) hold the config, the vocabulary and
half-precision weights, read with ``torch.load(weights_only=True)``; every config value is
checked before a model is built from it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from clip_models.base import ClipModel, resize
from clip_models.captions import VOCABULARY, WordTokenizer
from common.errors import UserError
from common.io import atomic_torch_save, check_weights_blob, file_sha256, read_weights_file

CLIP_FORMAT = "latent-directions/clip/v1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "world_clip32.pt"
_INT_KEYS = ("embed_dim", "width", "layers", "heads", "context", "resolution")


class TextEncoder(nn.Module):
    """Tokens ``N x context`` -> embeddings ``N x embed_dim`` (mean over the non-padding words)."""

    def __init__(self, vocabulary_size: int, embed_dim: int, width: int, layers: int, heads: int,
                 context: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary_size, width)
        self.positions = nn.Parameter(torch.randn(context, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == 0
        x = self.tokens(tokens) + self.positions[:tokens.shape[1]]
        x = self.norm(self.transformer(x, src_key_padding_mask=padding))
        keep = (~padding).float()[..., None]
        return self.projection((x * keep).sum(1) / keep.sum(1).clamp_min(1.0))


class WorldClip(ClipModel):
    """A small CLIP of the shapes world.

    Args:
        embed_dim: size of the shared embedding.
        width, layers, heads, context: the text Transformer (context: tokens per text).
        backbone, backbone_kwargs: the image trunk (timm, from scratch).
        resolution: side of the images it reads (inputs are resized to it).
        vocabulary: the tokenizer's words (a weights file stores its own).
    """

    kind = "world"

    def __init__(self, embed_dim: int = 128, width: int = 128, layers: int = 2, heads: int = 4,
                 context: int = 24, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, resolution: int = 32,
                 vocabulary: Sequence[str] = VOCABULARY) -> None:
        super().__init__()
        import timm

        self.backbone_kwargs = dict(backbone_kwargs if backbone_kwargs is not None
                                    else {"channels": [32, 64, 128, 256], "stem_width": 32})
        self.settings = {"embed_dim": embed_dim, "width": width, "layers": layers, "heads": heads,
                         "context": context, "backbone": backbone,
                         "backbone_kwargs": self.backbone_kwargs, "resolution": resolution,
                         "vocabulary": list(vocabulary)}
        self.embed_dim, self.resolution = embed_dim, resolution
        self.tokenizer = WordTokenizer(vocabulary, context)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.backbone_kwargs.items()}
        self.image_encoder = timm.create_model(backbone, pretrained=False, num_classes=embed_dim,
                                               **kwargs)
        self.text_encoder = TextEncoder(len(vocabulary), embed_dim, width, layers, heads, context)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.sha256: str | None = None
        self.trainable = True

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.logit_scale.device)

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(resize(images, self.resolution))

    def _text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(self.tokenize(texts))

    def loss(self, images: torch.Tensor, texts: Sequence[str], gather=None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The symmetric InfoNCE loss of a batch of pairs, and the logits ``M x M``.

        ``gather``: under DDP, ``gather(image, text) -> (all images, all texts)``: the
        embeddings of every process's batch (M pairs), this process's own in place with their
        gradients (the others' are constants), so that each pair is contrasted with the whole
        global batch, as one process with M pairs would (open_clip's default)."""
        image, text = self.encode_image(images), self.encode_text(texts)
        if gather is not None:
            image, text = gather(image, text)
        logits = self.logit_scale.clamp(max=math.log(100.0)).exp() * image @ text.T
        target = torch.arange(len(image), device=logits.device)
        loss = (nn.functional.cross_entropy(logits, target)
                + nn.functional.cross_entropy(logits.T, target)) / 2
        return loss, logits

    def save(self, path: str | Path, info: dict[str, Any] | None = None) -> Path:
        """Atomic write, weights in half precision."""
        state = {k: (v.half() if v.is_floating_point() else v).detach().cpu()
                 for k, v in self.state_dict().items()}
        return atomic_torch_save({"format": CLIP_FORMAT, "config": self.settings,
                                  "state_dict": state, "info": dict(info or {})}, path)


def _checked_config(config: Any, path: Path) -> dict[str, Any]:
    """The constructor arguments of a weights file, refused unless they are plain values of the
    expected types (a file is untrusted: nothing in it is called)."""
    expected = set(_INT_KEYS) | {"backbone", "backbone_kwargs", "vocabulary"}
    if not isinstance(config, dict) or set(config) != expected:
        keys = set(config) if isinstance(config, dict) else set()
        raise UserError(f"{path}: a world CLIP config has keys {sorted(expected)}; missing "
                        f"{sorted(expected - keys)}, unexpected {sorted(keys - expected)}")
    bad = [k for k in _INT_KEYS if not isinstance(config[k], int) or not 0 < config[k] <= 4096]
    if bad or config["backbone"] not in ("resnet18", "resnet10t", "resnet26", "resnet34"):
        raise UserError(f"{path}: config values out of range or of the wrong type: "
                        f"{bad or ['backbone']}")
    kwargs = config["backbone_kwargs"]
    if not isinstance(kwargs, dict) or not all(
            k in ("channels", "stem_width") and (isinstance(v, int) or (
                isinstance(v, (list, tuple)) and all(isinstance(c, int) for c in v)))
            for k, v in kwargs.items()):
        raise UserError(f"{path}: backbone_kwargs may hold only integer channels / stem_width")
    vocabulary = config["vocabulary"]
    if not isinstance(vocabulary, list) or not all(isinstance(w, str) for w in vocabulary):
        raise UserError(f"{path}: the vocabulary must be a list of words")
    return config


def load_world_clip(path: str | Path = DEFAULT_WEIGHTS, map_location: str = "cpu") -> WorldClip:
    """A frozen world CLIP from a weights file, or a name shipped in clip_models/weights/."""
    path, blob = read_weights_file(
        path, WEIGHTS_DIR, "clip", "train one with `python train.py experiment=clip_shapes` and "
        "pass <run>/clip.pt", map_location)
    check_weights_blob(blob, path, CLIP_FORMAT, "world CLIP")
    model = WorldClip(**_checked_config(blob["config"], path))
    state = blob["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: state_dict must map names to tensors")
    ours = model.state_dict()
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    wrong = [k for k in set(ours) & set(state) if ours[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise UserError(f"{path}: the weights do not fit the world CLIP's architecture: missing "
                        f"keys {missing[:8]}, unexpected keys {unexpected[:8]}, wrong shapes "
                        f"{sorted(wrong)[:8]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.sha256, model.path, model.info = file_sha256(path), str(path), blob["info"]
    model.trainable = False
    return model.freeze()
