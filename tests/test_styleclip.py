"""StyleCLIP's global directions (editing/styleclip.py, method=styleclip_global): the channel
relevance against its definition, the direction of a text pair, the cache (and crafted cache
files), and the method through train.py on a tiny random StyleGAN2 in S."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg, tiny_world_clip

from clip_models.base import ClipModel
from common.errors import UserError
from directions import Directions
from editing import styleclip
from generators import random_generator
from train import train

TINY_GENERATOR = dict(init_seed=0, style_dim=16, n_mlp=2, channels=[16, 16, 16, 8])
S = ["generator=stylegan2_random", "generator.space=s"]


class ColourClip(ClipModel):
    """A CLIP that reads the mean colour: images embed as their mean (R, G, B) in [0, 1], and
    texts name a colour ("a red shape") or none ("a shape": grey)."""

    kind = "colour"
    embed_dim, resolution = 3, 32
    WORDS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}

    def _image(self, images):
        return (images * 0.5 + 0.5).mean((2, 3)) + 1e-3

    def _text(self, texts):
        return torch.tensor([next((v for w, v in self.WORDS.items() if w in t), [1.0, 1.0, 1.0])
                             for t in texts])


@pytest.fixture(scope="module")
def generator():
    return random_generator("stylegan2", space="s", **TINY_GENERATOR)


def test_relevance_is_the_summed_change_of_the_image_embedding(generator):
    clip = ColourClip()
    styles = generator.draw(3, torch.Generator().manual_seed(0))[0]
    _, std = styleclip.style_statistics(generator, 500, 0)
    channels = torch.tensor([0, 5, 40])
    fast = styleclip.accumulate_relevance(generator, clip, styles, None, channels, std, 2.0, batch_size=5)
    for row, c in enumerate(channels.tolist()):
        step = torch.zeros(generator.latent_dim)
        step[c] = 2.0 * std[c]
        with torch.no_grad():
            slow = (clip.encode_image(generator(styles + step)) - clip.encode_image(generator(styles - step))).sum(0)
        assert torch.allclose(fast[row].float(), slow, atol=1e-5)


def test_probed_channels_leave_out_torgb(generator):
    layers = generator.style_layers()
    kept = set(styleclip.probed_channels(generator, torgb=False).tolist())
    for layer, where in zip(layers, generator.style_slices()):
        assert (set(range(where.start, where.stop)) <= kept) == (layer.kind != "torgb")
    assert len(styleclip.probed_channels(generator, torgb=True)) == generator.latent_dim


def test_a_text_direction_keeps_the_channels_above_beta():
    relevance = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    std = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0])
    channels = torch.tensor([0, 1, 2, 4])
    ds, kept = styleclip.global_direction(relevance, std, channels, torch.tensor([1.0, 0.0]), 0.5, 5)
    assert ds.tolist() == pytest.approx([2.0, 0.0, 0.6 * 4.0, 0.0, -6.0])
    assert kept["channels"] == 3 and kept["top_channels"][:2] == [0, 4]
    with pytest.raises(UserError, match="lower method.beta"):
        styleclip.global_direction(relevance, std, channels, F.normalize(torch.tensor([1.0, 1.0]), dim=0), 0.99, 5)


def test_the_red_direction_makes_images_redder(generator):
    """With a CLIP that reads colour, "a red shape" from "a shape" must raise red against green
    and blue on images the probe never saw, the more the further it goes."""
    clip = ColourClip()
    _, std = styleclip.style_statistics(generator, 500, 0)
    styles = generator.draw(8, torch.Generator().manual_seed(1))[0]
    test = generator.draw(16, torch.Generator().manual_seed(99))[0]
    dt = styleclip.text_direction(clip, "a red shape", "a shape")

    def redness(latent):
        with torch.no_grad():
            rgb = clip.encode_image(generator(latent))
        return float((rgb[:, 0] - rgb[:, 1:].mean(1)).mean())

    for torgb, alphas in ((True, (-2.0, -0.5, 0.0, 0.5, 2.0)), (False, (-0.5, 0.0, 0.5))):
        channels = styleclip.probed_channels(generator, torgb)
        relevance = styleclip.accumulate_relevance(generator, clip, styles, None, channels, std, 3.0)
        ds, _ = styleclip.global_direction(relevance.float(), std, channels, dt, 0.2, generator.latent_dim)
        scores = [redness(test + a * ds) for a in alphas]
        assert scores == sorted(scores) and scores[-1] > scores[0] + 0.2, (torgb, scores)


def test_cache_round_trip_and_crafted_caches(tmp_path, generator):
    clip = ColourClip()
    settings = styleclip.ProbeSettings(images=2)
    key = styleclip.relevance_cache_key(generator, clip, settings)
    path = styleclip.relevance_cache_path(tmp_path, generator, clip, settings)
    d = generator.latent_dim
    styleclip.save_relevance(path, torch.ones(4, 3), torch.ones(d), torch.arange(4), key, 1.5)
    assert styleclip.load_relevance(path, key, d)["seconds"] == 1.5
    assert styleclip.relevance_cache_key(generator, clip, styleclip.ProbeSettings(images=3)) != key
    # another key, wrong shapes, channels out of range, a foreign pickle: ignored (recomputed)
    assert styleclip.load_relevance(path, "other", d) is None
    styleclip.save_relevance(path, torch.ones(4, 3), torch.ones(d - 1), torch.arange(4), key, 1.5)
    assert styleclip.load_relevance(path, key, d) is None
    styleclip.save_relevance(path, torch.ones(4, 3), torch.ones(d), torch.arange(4) + d, key, 1.5)
    assert styleclip.load_relevance(path, key, d) is None

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    import pickle

    path.write_bytes(pickle.dumps({"format": Payload()}))
    assert styleclip.load_relevance(path, key, d) is None


def run(tmp_path, name, *extra):
    cfg = compose_cfg(["method=styleclip_global", f"run_name={name}", *S, "logger=none",
                       "trainer.enable_progress_bar=false", "evaluation.enabled=false",
                       f"clip.path={tiny_world_clip(tmp_path)}", "method.images=4", "data.batch_size=2",
                       "method.std_samples=200", "method.traversal.num_seeds=1",
                       "method.traversal.steps=3", *extra], tmp_path)
    metrics = train(cfg)
    return Directions.load(tmp_path / name / "directions.pt"), metrics


def test_styleclip_global_through_train_py_and_its_cache(tmp_path):
    made, metrics = run(tmp_path, "first", "method.target=[a large shape,a red circle]")
    assert made.num_directions == 2 and made.meta["space"] == "s"
    assert made.meta["config"]["fit_free"]["targets"] == ["a large shape", "a red circle"]
    assert metrics["probed_channels"] > 0 and metrics["relevance_seconds"] > 0
    cached = list((tmp_path / ".cache" / "styleclip").glob("relevance-*.pt"))
    assert len(cached) == 1
    # a second run with another text reads the cache: one batch, nothing rendered, same channels
    again, metrics2 = run(tmp_path, "second", "method.target=a large shape")
    assert metrics2["relevance_seconds"] == pytest.approx(metrics["relevance_seconds"])
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["batches"] == 1
    assert torch.allclose(again.directions.vectors()[0], made.directions.vectors()[0], atol=1e-6)


def test_the_probe_does_not_depend_on_how_it_is_batched(tmp_path):
    """The probe images come from method.probe_seed image by image: data.batch_size (and the
    process count) do not change the relevance, so the cache key need not name them."""
    one, _ = run(tmp_path, "b2", "method.cache_dir=null", "data.batch_size=2")
    two, _ = run(tmp_path, "b4", "method.cache_dir=null", "data.batch_size=4")
    other, _ = run(tmp_path, "s1", "method.cache_dir=null", "method.probe_seed=1")
    assert torch.allclose(one.directions.vectors(), two.directions.vectors(), atol=1e-5)
    assert not torch.allclose(one.directions.vectors(), other.directions.vectors(), atol=1e-5)


def test_styleclip_global_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(UserError, match="does not know the words"):
        run(tmp_path, "w", "method.target=a smiling shape")
    with pytest.raises(UserError, match="generator.space=s"):
        run(tmp_path, "z", "generator.space=w")
    with pytest.raises(UserError, match="embed alike"):
        run(tmp_path, "same", "method.target=a shape")
