"""A name for every direction, from a CLIP: the prompt whose similarity to the images changes most
along the direction's traversal.

For direction k, samples z_n and alphas a_1..a_T spread over [-alpha, alpha], with unit image
embeddings e_{n,t} = E_I(G(shift(z_n, k, a_t))) and unit prompt embeddings t_p:

    slope_p  = mean_n  least-squares slope of  e_{n,t} . t_p  against a_t
    score_p  = alpha * (slope_p - mean_q slope_q)

(any change of the image moves every similarity a little; subtracting the mean over the prompts
keeps what is particular to each). The name is the prompt of largest |score|; its sign says
which end of the slider shows it (+: larger alpha). The default vocabulary is the world's
(``world_prompts``: each prompt tagged with the factor it names, so the names can be compared
with the regressor's dominant factor); a user's generator takes a list of words and a template
("a photo of a {} face").
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from clip_models.captions import COLOURS, SIZES
from datamodules.world import SHAPES
from metrics.rca import shifted


def world_prompts() -> dict[str, str]:
    """The world's vocabulary: a prompt per factor word, mapped to the factor it names."""
    prompts = {f"a {s}": "shape" for s in SHAPES}
    prompts.update({f"a {size} shape": "scale" for size in (SIZES[0], SIZES[2])})
    prompts.update({f"a shape on the {side}": "x" for side in ("left", "right")})
    prompts.update({f"a shape at the {side}": "y" for side in ("top", "bottom")})
    prompts.update({"an upright shape": "rotation", "a shape turned a lot": "rotation"})
    prompts.update({f"a {c} shape": "hue" for c in COLOURS})
    return prompts


@torch.no_grad()
def name_directions(directions, generator, clip, prompts: Sequence[str], alpha: float,
                    samples: int = 16, steps: int = 5, seed: int = 0, top: int = 3,
                    batch_size: int = 128) -> list[dict[str, Any]]:
    """For each direction: ``{"name", "sign", "score", "alternatives": [[prompt, score], ...]}``.

    Args:
        directions: anything with ``num_directions`` and ``shift(latent, index, alpha)``.
        generator: the frozen generator.
        clip: a ``clip_models.base.ClipModel``.
        prompts: the vocabulary.
        alpha: the half-range of the traversal, in the directions' units.
        samples, steps, seed: the latents (drawn from ``seed``) and the alphas of the traversal.
        top: prompts kept a direction (the name first).
    """
    device = generator.device
    latents, classes = generator.draw(samples, torch.Generator().manual_seed(seed))
    texts = clip.encode_text(list(prompts)).to(device)  # P x E
    alphas = torch.linspace(-alpha, alpha, steps, device=device)
    centred = alphas - alphas.mean()
    out = []
    for k in range(directions.num_directions):
        moved = torch.cat([shifted(directions, latents, k, float(a), classes) for a in alphas])  # (T N) x ...
        y = None if classes is None else classes.repeat(steps)
        embeddings = torch.cat([clip.encode_image(generator(moved[i:i + batch_size],
                                                            None if y is None else y[i:i + batch_size]))
                                for i in range(0, moved.shape[0], batch_size)])
        sims = (embeddings @ texts.T).view(steps, samples, -1)  # T x N x P
        slope = (centred[:, None, None] * sims).sum(0) / centred.pow(2).sum()  # N x P
        score = alpha * (slope.mean(0) - slope.mean())  # P
        order = score.abs().argsort(descending=True)[:top].tolist()
        best = order[0]
        out.append({"name": prompts[best], "sign": 1 if score[best] >= 0 else -1,
                    "score": round(float(score[best]), 5),
                    "alternatives": [[prompts[i], round(float(score[i]), 5)] for i in order[1:]]})
    return out


def name_label(entry: dict[str, Any]) -> str:
    """A slider's label from a name: the prompt and the end of the slider that shows it."""
    return f"{entry['name']} ({'+' if entry['sign'] > 0 else '-'})"


def agreement(names: list[dict[str, Any]], prompt_factors: dict[str, str],
              dominant: Sequence[str]) -> dict[str, Any]:
    """How often the CLIP's name names the factor the regressor finds the direction moves most."""
    pairs = [(prompt_factors.get(n["name"]), d) for n, d in zip(names, dominant)]
    same = [a == b for a, b in pairs if a is not None]
    return {"directions": len(same), "agree": sum(same),
            "rate": round(sum(same) / len(same), 4) if same else None}
