"""The quality figures of a CLIP of the shapes world, on renders with their true factors.

- Zero-shot accuracy per attribute (Radford et al., 2021): each image is given the class whose
  prompt ("a circle", "a red shape", "a small shape", "a shape in the top left") it is most
  similar to. Shape: 3 classes; colour name: 12 (one per 30 degrees of hue); size: 3 (thirds of
  scale); quadrant: 4, asked only of images in the outer thirds of both axes (where the caption
  language names a quadrant).
- Text-to-image retrieval: each image's full caption (every attribute, ``describe(full=True)``)
  queries the whole set. ``recall@k``: its own image is among the k most similar. Different
  images can share a full caption (3 x 12 x 3 x 9 x 3 descriptions), so ``match@1`` also counts
  the best image as right when it fits the caption, which is what a user of retrieval asks.
"""
from __future__ import annotations

import torch

from clip_models.captions import describe, zero_shot_labels, zero_shot_prompts


@torch.no_grad()
def clip_scores(model, images: torch.Tensor, factors: torch.Tensor,
                batch_size: int = 512) -> dict[str, float]:
    """Zero-shot accuracies and retrieval recalls of ``model`` on renders and their factors."""
    embeddings = torch.cat([model.encode_image(images[i:i + batch_size])
                            for i in range(0, len(images), batch_size)])
    labels = zero_shot_labels(factors.cpu())
    scores: dict[str, float] = {}
    for attribute, prompts in zero_shot_prompts().items():
        predicted = (embeddings @ model.encode_text(prompts).T).argmax(1).cpu()
        known = labels[attribute] >= 0
        scores[f"zero_shot_{attribute}"] = float((predicted[known] == labels[attribute][known])
                                                 .float().mean())
    captions = describe(factors.cpu(), full=True)
    texts = torch.cat([model.encode_text(captions[i:i + batch_size])
                       for i in range(0, len(captions), batch_size)])
    similarity = texts @ embeddings.T
    own = similarity.diagonal()[:, None]
    rank = (similarity > own).sum(1).cpu()  # images ranked strictly above the query's own image
    scores["recall@1"] = float((rank < 1).float().mean())
    scores["recall@5"] = float((rank < 5).float().mean())
    best = similarity.argmax(1).cpu().tolist()
    scores["match@1"] = sum(captions[b] == c for b, c in zip(best, captions)) / len(captions)
    return {k: round(v, 4) for k, v in scores.items()}
