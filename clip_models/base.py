"""The CLIP interface every text feature of the project talks to (StyleCLIP's global directions,
text-guided learning, names for directions, the explorer's text box).

A ``ClipModel`` is frozen (eval mode, no gradient on its weights; gradients still flow to the
images it reads) and offers ``encode_image(images in [-1, 1], any size)`` and
``encode_text(list of strings)``, both returning L2-normalised embeddings ``N x embed_dim``,
so that a cosine similarity is a dot product. Each implementation resizes and normalises images
the way its image encoder was trained. Its ``identity()`` names the weights (file hash), for
caches of statistics computed with it.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError


class ClipModel(nn.Module):
    """Base class: subclasses set ``embed_dim``, ``resolution`` and implement ``_image`` and
    ``_text`` (unnormalised embeddings)."""

    embed_dim: int
    resolution: int  # the side its image encoder reads; inputs are resized to it
    kind: str

    def freeze(self) -> "ClipModel":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "ClipModel":
        # Frozen for good once loaded: a method's .train() must not switch its normalisation
        # layers to batch statistics.
        return super().train(mode and getattr(self, "trainable", False))

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``N x embed_dim`` of images ``N x 3 x H x W`` in [-1, 1]."""
        return F.normalize(self._image(images), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit embeddings ``N x embed_dim`` of texts."""
        if isinstance(texts, str):
            texts = [texts]
        return F.normalize(self._text(list(texts)), dim=-1)

    def similarity(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities ``N images x T texts``."""
        return self.encode_image(images) @ self.encode_text(texts).T

    def identity(self) -> dict[str, Any]:
        """What statistics computed with this model depend on."""
        return {"kind": self.kind, "sha256": getattr(self, "sha256", None)}


def resize(images: torch.Tensor, side: int, mode: str = "bilinear") -> torch.Tensor:
    """Images resized to ``side x side`` (antialiased when shrinking)."""
    if images.shape[-2:] == (side, side):
        return images
    return F.interpolate(images, size=(side, side), mode=mode, antialias=True, align_corners=False)


def check_words(clip: ClipModel, texts: Sequence[str]) -> None:
    """A closed-vocabulary CLIP (the world's) refuses words it cannot read, naming them."""
    tokenizer = getattr(clip, "tokenizer", None)
    unknown = getattr(tokenizer, "unknown", None)
    if unknown is None:
        return
    words = sorted({w for t in texts for w in unknown(t)})
    if words:
        vocabulary = [w for w in tokenizer.vocabulary if not w.startswith("<")]
        raise UserError(f"the world CLIP does not know the words {words}; it reads "
                        f"{' '.join(vocabulary)} (and comparatives such as larger); for other "
                        "words use your own CLIP: clip.path=<weights> clip.arch=ViT-B-32")
