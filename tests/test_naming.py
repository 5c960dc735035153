"""Names for directions from a CLIP (metrics/naming.py, evaluation.naming): the prompt whose
similarity changes most along a direction, written to evaluation.json, compared with the
regressor's dominant factor, and shown by the explorer where no regressor reads the images."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import EVAL_TINY, TINY, compose_cfg, tiny_world_clip
from test_styleclip import TINY_GENERATOR, ColourClip

from common.errors import UserError
from explorer.render import direction_labels
from generators import random_generator
from metrics.naming import agreement, name_directions, name_label, world_prompts
from train import train


class Along:
    """One direction along a given vector (the red direction of the colour CLIP)."""

    num_directions = 2

    def __init__(self, vector):
        self.vector = vector

    def shift(self, latent, index, alpha):
        return latent + (alpha if index == 0 else -alpha) * self.vector


def test_a_red_direction_is_named_red_and_its_reverse_names_the_other_end():
    from editing.styleclip import (
        accumulate_relevance,
        global_direction,
        probed_channels,
        style_statistics,
        text_direction,
    )

    generator = random_generator("stylegan2", space="s", **TINY_GENERATOR)
    clip = ColourClip()
    _, std = style_statistics(generator, 500, 0)
    channels = probed_channels(generator, True)
    styles = generator.draw(8, torch.Generator().manual_seed(1))[0]
    relevance = accumulate_relevance(generator, clip, styles, None, channels, std, 3.0)
    ds, _ = global_direction(relevance.float(), std, channels,
                             text_direction(clip, "a red shape", "a shape"), 0.2, generator.latent_dim)
    prompts = ["a red shape", "a green shape", "a blue shape"]
    names = name_directions(Along(ds), generator, clip, prompts, alpha=1.0, samples=8)
    assert names[0]["name"] == "a red shape" and names[0]["sign"] == 1
    assert names[1]["name"] == "a red shape" and names[1]["sign"] == -1  # the same axis, reversed
    assert len(names[0]["alternatives"]) == 2 and name_label(names[0]) == "a red shape (+)"


def test_agreement_counts_directions_whose_name_names_the_dominant_factor():
    factors = world_prompts()
    assert factors["a circle"] == "shape" and factors["a shape on the left"] == "x"
    assert factors["a magenta shape"] == "hue" and factors["a large shape"] == "scale"
    names = [{"name": "a circle"}, {"name": "a shape on the left"}, {"name": "a red shape"}]
    assert agreement(names, factors, ["shape", "y", "hue"]) == {"directions": 3, "agree": 2,
                                                                 "rate": pytest.approx(0.6667, abs=1e-4)}


def test_a_run_on_a_world_generator_names_its_directions(tmp_path):
    """A generator of the world (its regressor reads the world's factors) gets names from the
    world CLIP by default; the report compares them with the regressor's dominant factors."""
    cfg = compose_cfg(["method=voynov", "run_name=named", *TINY, *EVAL_TINY, "generator=dcgan_shapes",
                       "method.num_directions=3", f"clip.path={tiny_world_clip(tmp_path)}",
                       "evaluation.naming.samples=2", "evaluation.naming.steps=3"], tmp_path)
    train(cfg)
    report = json.loads((tmp_path / "named" / "evaluation.json").read_text())
    names = report["names"]
    assert len(names["directions"]) == 3 and names["vocabulary"] == "world"
    assert set(names["directions"][0]) == {"name", "sign", "score", "alternatives"}
    assert names["directions"][0]["name"] in world_prompts()
    result = report["results"][report["label"]]
    dominant = [result["factors"][f] for f in result["dominant_factor"]]
    same = sum(world_prompts()[n["name"]] == d for n, d in zip(names["directions"], dominant))
    assert names["agreement"]["directions"] == 3 and names["agreement"]["agree"] == same
    # labels: the regressor's, since it reads these images
    labels = direction_labels(tmp_path / "named" / "directions.pt", 3)
    assert "purity" in labels[0]


def test_without_a_regressor_the_explorer_shows_the_names(tmp_path):
    """A generator of your own with your words: the run names its directions, and the explorer
    labels the sliders with them since no regressor reads the images."""
    cfg = compose_cfg(["method=voynov", "run_name=yours", *TINY, *EVAL_TINY, "method.num_directions=2",
                       "evaluation.regressor=null", f"clip.path={tiny_world_clip(tmp_path)}",
                       "evaluation.naming.enabled=true", "evaluation.naming.prompts=[red,blue,large]",
                       "evaluation.naming.template='a {} shape'", "evaluation.naming.samples=2"], tmp_path)
    train(cfg)
    report = json.loads((tmp_path / "yours" / "evaluation.json").read_text())
    assert report["names"]["vocabulary"] == "yours" and "agreement" not in report["names"]
    labels = direction_labels(tmp_path / "yours" / "directions.pt", 2)
    assert all(label.startswith(f"direction {k}: a ") and label.endswith(("(+)", "(-)"))
               for k, label in enumerate(labels))


def test_bad_naming_options_are_refused_before_training(tmp_path):
    base = ["method=voynov", "run_name=bad", *TINY, *EVAL_TINY, f"clip.path={tiny_world_clip(tmp_path)}",
            "evaluation.naming.enabled=true"]
    for extra, message in ((["evaluation.naming.prompts=[zebra,lion]"], "does not know the words"),
                           (["evaluation.naming.prompts=red"], "a list of at least two words"),
                           (["evaluation.naming.template=shape", "evaluation.naming.prompts=[red,blue]"],
                            "needs a {}")):
        with pytest.raises(UserError, match=message):
            train(compose_cfg([*base, *extra], tmp_path))
        assert not (tmp_path / "bad").exists()
