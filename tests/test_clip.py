"""CLIP models: the world's caption language, the world CLIP (loss, weights files, training
through train.py), a user's open_clip file (real architectures, random weights, parity with
open_clip's own forward), and crafted files that must be refused."""
from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import TINY_CLIP, compose_cfg

import train
from clip_models import load_clip
from clip_models.captions import VOCABULARY, WordTokenizer, describe, zero_shot_labels, zero_shot_prompts
from clip_models.world import WorldClip, load_world_clip
from common.errors import MissingFile, UserError
from datamodules.world import ShapesWorld

TINY = TINY_CLIP
TINY_OVERRIDES = ["method.model.embed_dim=16", "method.model.width=16", "method.model.layers=1",
                  "method.model.heads=2", "method.model.backbone_kwargs={channels:[8,8,16,16],stem_width:8}"]


def factors_of(shape, scale, rotation, x, y, hue):
    return torch.tensor([[shape, scale, rotation, x, y, hue]], dtype=torch.float32)


# ------------------------------------------------------------------------- the caption language
def test_full_captions_name_every_factor():
    assert describe(factors_of(1, 0.9, 0.0, 0.1, 0.1, 0.0), full=True) == [
        "a large red circle in the top left"]
    assert describe(factors_of(0, 0.1, 0.4, 0.5, 0.9, 2 / 3), full=True) == [
        "a small blue square at the bottom turned a lot"]
    assert describe(factors_of(2, 0.5, 0.02, 0.9, 0.5, 0.5), full=True) == [
        "a medium cyan triangle on the right upright"]


def test_training_captions_vary_and_stay_in_the_vocabulary():
    world = ShapesWorld(32)
    factors = world.sample_factors(500, torch.Generator().manual_seed(0))
    captions = describe(factors, torch.Generator().manual_seed(1))
    tokenizer = WordTokenizer()
    assert not [w for c in captions for w in tokenizer.unknown(c)]
    assert len(set(captions)) > 300 and "a shape" in describe(factors, keep=0.0)
    # the same randomness gives the same captions (a resumed run sees the same batches)
    assert captions == describe(factors, torch.Generator().manual_seed(1))


def test_tokenizer_reads_prompts_the_captions_do_not_use():
    tokenizer = WordTokenizer()
    assert tokenizer.words("A LARGER shape, further left!") == ["a", "large", "shape", "further", "left"]
    assert tokenizer.unknown("a zebra shape") == ["zebra"]
    tokens = tokenizer(["a red circle", "x " * 40])
    assert tokens.shape == (2, tokenizer.context) and tokens[0, 0] == VOCABULARY.index("<bos>")
    assert (tokens[0, 4:] == 0).all() and (tokens[1] != 0).all()


def test_zero_shot_labels_leave_out_what_captions_do_not_name():
    factors = torch.cat([factors_of(2, 0.1, 0, 0.9, 0.9, 0.25), factors_of(1, 0.5, 0, 0.5, 0.1, 0.98)])
    labels = zero_shot_labels(factors)
    assert labels["quadrant"].tolist() == [3, -1]  # bottom right; the second is at the top centre
    assert labels["colour"].tolist() == [3, 0] and labels["size"].tolist() == [0, 1]
    prompts = zero_shot_prompts()
    assert prompts["quadrant"][3] == "a shape in the bottom right" and len(prompts["colour"]) == 12


# ------------------------------------------------------------------------------ the world CLIP
def test_world_clip_embeddings_are_unit_and_the_loss_falls():
    torch.manual_seed(0)
    model = WorldClip(**TINY)
    world = ShapesWorld(32)
    factors = world.sample_factors(32, torch.Generator().manual_seed(0))
    images, captions = world.render(factors), describe(factors, full=True)
    assert torch.allclose(model.encode_image(images).norm(dim=1), torch.ones(32), atol=1e-5)
    assert model.encode_text(captions).shape == (32, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, _ = model.loss(images, captions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_world_clip_file_round_trip_and_freezing(tmp_path):
    model = WorldClip(**TINY).eval()
    path = model.save(tmp_path / "clip.pt", info={"note": "test"})
    loaded = load_clip(path)
    images = ShapesWorld(32).render(ShapesWorld(32).sample_factors(4))
    assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=2e-2)
    assert torch.allclose(loaded.encode_text(["a red circle"]), model.encode_text(["a red circle"]),
                          atol=2e-2)
    assert loaded.info == {"note": "test"} and loaded.identity()["sha256"]
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.training  # frozen for good: a method's .train() leaves it in eval mode
    # gradients still reach the images it reads (text-guided learning needs them)
    pixels = images.clone().requires_grad_(True)
    loaded.encode_image(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_crafted_world_clip_files_are_refused(tmp_path):
    with pytest.raises(MissingFile, match="experiment=clip_shapes"):
        load_world_clip(tmp_path / "missing.pt")
    good = torch.load(WorldClip(**TINY).save(tmp_path / "good.pt"), weights_only=True)

    def write(name, blob):
        torch.save(blob, tmp_path / name)
        return tmp_path / name

    with pytest.raises(UserError, match="missing keys"):
        load_world_clip(write("other.pt", {"weights": 1}))
    with pytest.raises(UserError, match="wrong type"):
        load_world_clip(write("type.pt", {**good, "config": {**good["config"], "layers": "2"}}))
    with pytest.raises(UserError, match="unexpected"):
        load_world_clip(write("extra.pt", {**good, "config": {**good["config"], "_target_": "os.system"}}))
    with pytest.raises(UserError, match="integer channels"):
        load_world_clip(write("kwargs.pt", {**good, "config": {
            **good["config"], "backbone_kwargs": {"act_layer": "os.system"}}}))
    state = dict(good["state_dict"])
    state["logit_scale"] = torch.zeros(3)
    with pytest.raises(UserError, match="wrong shapes"):
        load_world_clip(write("shape.pt", {**good, "state_dict": state}))

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "code.pt").write_bytes(pickle.dumps({"format": Payload()}))
    with pytest.raises(UserError):
        load_world_clip(tmp_path / "code.pt")


def test_world_clip_trains_through_train_py(tmp_path):
    cfg = compose_cfg(["experiment=clip_shapes", "run_name=test", "logger=none",
                       "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
                       *TINY_OVERRIDES, "data.batch_size=16", "data.val_batches=1"], tmp_path)
    train.train(cfg)
    run = tmp_path / "test"
    scores = json.loads((run / "clip_scores.json").read_text())["held_out"]
    assert {"zero_shot_shape", "zero_shot_colour", "zero_shot_size", "zero_shot_quadrant",
            "recall@1", "recall@5", "match@1"} <= set(scores)
    assert load_world_clip(run / "clip.pt").embed_dim == 16


def test_gathered_negatives_give_the_loss_of_the_global_batch():
    """Under DDP a process's loss is the one of the whole global batch: its own embeddings with
    their gradients, the other processes' as constants (simulated here for 2 processes)."""
    torch.manual_seed(0)
    model = WorldClip(**TINY).eval()  # (in training, batch norm reads each process's batch)
    world = ShapesWorld(32)
    factors = world.sample_factors(12, torch.Generator().manual_seed(0))
    images, captions = world.render(factors), describe(factors, full=True)
    whole, _ = model.loss(images, captions)
    with torch.no_grad():  # what the other process (rank 1) sends: its embeddings
        other_image, other_text = model.encode_image(images[6:]), model.encode_text(captions[6:])

    def gather(image, text):
        return torch.cat([image, other_image]), torch.cat([text, other_text])

    mine, logits = model.loss(images[:6], captions[:6], gather)
    assert logits.shape == (12, 12) and torch.allclose(mine, whole, atol=1e-5)
    mine.backward()
    assert model.logit_scale.grad is not None


@pytest.mark.slow
def test_world_clip_trains_on_two_ddp_processes(tmp_path):
    from conftest import run_script

    args = ["experiment=clip_shapes", "run_name=two", "trainer=ddp_cpu", "logger=none",
            "trainer.max_steps=2", "trainer.val_check_interval=2", *TINY_OVERRIDES,
            "data.batch_size=8", "data.val_batches=1", "trainer.enable_progress_bar=false"]
    result = run_script(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_world_clip(tmp_path / "outputs/two/clip.pt").embed_dim == 16


def test_the_shipped_world_clip_reads_the_world():
    """The shipped weights' figures (clip_models/weights/README.md), again on fresh renders."""
    from metrics.clip import clip_scores

    model = load_clip()
    world = ShapesWorld(32)
    factors = world.sample_factors(512, torch.Generator().manual_seed(123))
    scores = clip_scores(model, world.render(factors), factors)
    assert scores["zero_shot_shape"] > 0.95 and scores["zero_shot_size"] > 0.8
    assert scores["zero_shot_colour"] > 0.8 and scores["zero_shot_quadrant"] > 0.9
    assert scores["match@1"] > 0.5


# ------------------------------------------------------------------------- a user's open_clip file
open_clip = pytest.importorskip("open_clip")

TINY_ARCH = "TinyCLIP-test"


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """A small config of open_clip's own ViT + text Transformer classes, registered like a
    user's model config (the published architectures are the same classes, wider)."""
    folder = tmp_path_factory.mktemp("arch")
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    return TINY_ARCH


def reference(arch, seed=0):
    torch.manual_seed(seed)
    return open_clip.create_model(arch, pretrained=None).eval()


def parity(ours, model, side):
    """Our embeddings against open_clip's own forward on the same inputs."""
    images = torch.rand(3, 3, side, side) * 2 - 1
    texts = ["a photo of a cat", "a red square", "a shape"]
    tokenizer = open_clip.get_tokenizer(ours.arch)
    with torch.no_grad():
        image_features, text_features, _ = model(ours.preprocess(images), tokenizer(texts))[:3]
        mine_images, mine_texts = ours.encode_image(images), ours.encode_text(texts)
    reference_images = torch.nn.functional.normalize(image_features, dim=-1)
    reference_texts = torch.nn.functional.normalize(text_features, dim=-1)
    return ((mine_images - reference_images).abs().max().item(),
            (mine_texts - reference_texts).abs().max().item())


def test_open_clip_files_in_every_published_layout(tmp_path, tiny_arch):
    from safetensors.torch import save_file

    model = reference(tiny_arch)
    state = model.state_dict()
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "open_clip_model.safetensors"))
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "epoch_3.pt")
    for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "epoch_3.pt"):
        ours = load_clip(tmp_path / name, arch=tiny_arch)
        assert ours.embed_dim == 32 and ours.resolution == 32
        assert max(parity(ours, model, 32)) < 1e-5, name
        assert not any(p.requires_grad for p in ours.parameters())
    # images of another size are resized to the model's input (a 256 px generator, say)
    ours = load_clip(tmp_path / "open_clip_pytorch_model.bin", arch=tiny_arch)
    assert ours.encode_image(torch.zeros(2, 3, 64, 64)).shape == (2, 32)


def test_bad_open_clip_requests_are_refused(tmp_path, tiny_arch):
    with pytest.raises(MissingFile, match="nothing is downloaded"):
        load_clip(tmp_path / "missing.bin", arch=tiny_arch)
    with pytest.raises(UserError, match="not an open_clip architecture"):
        load_clip(tmp_path / "missing.bin", arch="ViT-Q-99")
    with pytest.raises(UserError, match="Hugging Face"):
        load_clip(tmp_path / "missing.bin", arch="roberta-ViT-B-32")
    state = reference(tiny_arch).state_dict()
    state.pop("logit_scale")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "wrong.bin")
    with pytest.raises(UserError, match=r"missing keys \['logit_scale'\], unexpected keys \['extra.weight'\]"):
        load_clip(tmp_path / "wrong.bin", arch=tiny_arch)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "code.bin").write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(UserError):
        load_clip(tmp_path / "code.bin", arch=tiny_arch)
    torch.save([1, 2], tmp_path / "list.bin")
    with pytest.raises(UserError, match="state dict of tensors"):
        load_clip(tmp_path / "list.bin", arch=tiny_arch)


@pytest.mark.slow
def test_vit_b_32_with_random_weights_matches_open_clip(tmp_path):
    """The real ViT-B-32 (OpenAI's CLIP layout, 151 M parameters) with random weights."""
    model = reference("ViT-B-32", seed=1)
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    ours = load_clip(tmp_path / "open_clip_pytorch_model.bin", arch="ViT-B-32")
    assert ours.resolution == 224 and ours.embed_dim == 512
    assert max(parity(ours, model, 224)) < 1e-5
