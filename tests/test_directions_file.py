"""The Directions file (format v2) and its renderer: per-layer (W+) directions, several edits at
once, the generator's identity and source in the file, safe loading, v1 files, the alpha range
and the traversal renderer."""
import os
import pathlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from directions import (
    DIRECTIONS_FORMAT,
    PARAMETRISATIONS,
    BasisDirections,
    Directions,
    LinearDirections,
    LocalDirections,
    MLPWalk,
    OrthoDirections,
    ProjDirections,
    RBFWarps,
    VectorDirections,
)
from generators import random_generator

TINY_STYLEGAN = dict(resolution=8, style_dim=8, n_mlp=1, channels=[8, 8])


@pytest.fixture(scope="module")
def wplus():
    return random_generator("stylegan2", space="w+", **TINY_STYLEGAN)


@pytest.fixture(scope="module")
def dcgan():
    return random_generator("dcgan", latent_dim=4, resolution=8, width=4)


def every_set(d: int, k: int = 3, layers=None) -> dict:
    """One set of every kind (and the norm-keeping vectors), with visible non-linearity."""
    sets = {
        "linear": LinearDirections(d, k, init_seed=0, layers=layers),
        "ortho": OrthoDirections(d, layers=layers),
        "proj": ProjDirections(d, k, layers=layers),
        "warped": RBFWarps(d, k, num_dipoles=2, gamma=0.3, traversal_step=0.3, init_seed=0,
                           layers=layers),
        "vectors": VectorDirections(d, k, init_scale=1.0, init_seed=0, layers=layers),
        "vectors_keep_norm": VectorDirections(d, k, init_scale=1.0, keep_norm=True, init_seed=0,
                                              layers=layers),
        "walk_mlp": MLPWalk(d, k, hidden=8, step_size=0.5, init_seed=0, layers=layers),
        "basis": BasisDirections.of(torch.randn(k, d, generator=torch.Generator().manual_seed(3)),
                                    scales=torch.linspace(0.5, 2.0, k), layers=layers),
        "local_mlp": LocalDirections(d, k, hidden=8, init_scale=1.0, init_seed=0, layers=layers),
    }
    with torch.no_grad():
        sets["ortho"].skew.normal_(generator=torch.Generator().manual_seed(0))
        sets["proj"].bias.normal_(generator=torch.Generator().manual_seed(1))
        for net in sets["walk_mlp"].nets:
            net[2].weight.normal_(std=0.3, generator=torch.Generator().manual_seed(2))
        sets["local_mlp"].net[2].weight.normal_(std=0.3, generator=torch.Generator().manual_seed(4))
    return sets


# ---- 1. layer ranges of W+ ------------------------------------------------------------------
def test_layers_are_validated_and_saved(tmp_path):
    d = LinearDirections(4, 2, init_seed=0, layers=[3, 1, 1])
    assert d.layers == [1, 3] and d.config()["layers"] == [1, 3]
    assert LinearDirections(4, 2, layers=2).layers == [2]
    assert LinearDirections(4, 2).config()["layers"] is None
    for bad, message in [("coarse", "generator.layers"), ([], "non-empty"), ([-1], "non-negative"),
                         (["a"], "layer indices")]:
        with pytest.raises(ValueError, match=message):
            LinearDirections(4, 2, layers=bad)
    for kind, made in every_set(4, layers=[0, 2]).items():
        path = Directions(made).save(tmp_path / f"{kind}.pt")
        back = Directions.load(path)
        assert back.layers == [0, 2] and back.meta["layers"] == [0, 2] and back.space == "w+", kind


def test_linear_per_layer_shift_moves_only_its_layers():
    d = LinearDirections(4, 3, init_seed=0, layers=[1, 3])
    ws = torch.randn(2, 5, 4)
    index, alpha = torch.tensor([2, 0]), torch.tensor([1.5, -0.5])
    out = d.shift(ws, index, alpha)
    offset = alpha[:, None] * d.vectors()[index]
    assert torch.equal(out[:, [0, 2, 4]], ws[:, [0, 2, 4]])
    assert torch.allclose(out[:, [1, 3]], ws[:, [1, 3]] + offset[:, None], atol=1e-6)
    # no layers: N x d as before, and every layer of N x L x d
    free = LinearDirections(4, 3, init_seed=0)
    assert torch.allclose(free.shift(ws, index, alpha), ws + offset[:, None], atol=1e-6)
    assert torch.allclose(free.shift(ws[:, 0], index, alpha), ws[:, 0] + offset, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "ortho", "proj", "warped", "vectors",
                                  "vectors_keep_norm", "walk_mlp", "local_mlp"])
def test_every_kind_shifts_each_selected_layer_with_its_own_sample(kind):
    """N x L x d: each selected layer's code moves by the set's N x d shift with its sample's
    index and alpha; the other layers are unchanged; layers=None moves every layer."""
    ws = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(3))
    index, alpha = torch.tensor([0, 2, 1]), torch.tensor([1.2, -0.7, 0.9])
    layered = every_set(4, layers=[0, 2])[kind]
    out = layered.shift(ws, index, alpha)
    for layer in range(4):
        expected = layered.shift_codes(ws[:, layer], index, alpha) if layer in (0, 2) else ws[:, layer]
        assert torch.allclose(out[:, layer], expected, atol=1e-5), (kind, layer)
    assert not torch.allclose(out[:, 0], ws[:, 0])
    free = every_set(4)[kind]
    every = free.shift(ws, index, alpha)
    for layer in range(4):
        assert torch.allclose(every[:, layer], free.shift(ws[:, layer], index, alpha), atol=1e-5)


def test_per_layer_shift_refuses_wrong_latents():
    d = RBFWarps(4, 2, num_dipoles=2, layers=[1])
    with pytest.raises(ValueError, match=r"layers 1 of per-layer \(W\+\) codes.*generator.space=w\+"):
        d.shift(torch.randn(2, 4), 0, 1.0)
    with pytest.raises(ValueError, match=r"moves layers \[1\].*1 per-layer codes"):
        d.shift(torch.randn(2, 1, 4), 0, 1.0)
    with pytest.raises(ValueError, match="takes latents N x 4 or N x L x 4"):
        LinearDirections(4, 2).shift(torch.randn(2, 3, 5), 0, 1.0)
    # the warp's training step follows the same layers
    ws = torch.randn(2, 3, 4)
    stepped = d.step(ws, 1, 0.5)
    assert torch.equal(stepped[:, [0, 2]], ws[:, [0, 2]])
    assert torch.allclose(stepped[:, 1], d.step_codes(ws[:, 1], 1, 0.5))


def test_per_layer_shift_is_differentiable():
    for d in (LinearDirections(4, 2, layers=[0, 2]), RBFWarps(4, 2, num_dipoles=2, layers=[1])):
        ws = torch.randn(2, 3, 4, requires_grad=True)
        d.shift(ws, torch.tensor([0, 1]), torch.tensor([1.0, -1.0])).pow(2).sum().backward()
        trained = d.weight if isinstance(d, LinearDirections) else d.support
        assert trained.grad is not None and trained.grad.abs().sum() > 0
        assert ws.grad is not None


# ---- 2. several edits -----------------------------------------------------------------------
def test_apply_combines_edits_in_order():
    ws = torch.randn(3, 4, 4)
    linear = Directions(LinearDirections(4, 3, init_seed=0, layers=[0, 1]))
    edits = [(0, 1.0), (2, torch.tensor([0.5, -1.0, 2.0]))]
    both = linear.apply(ws, edits)
    assert torch.allclose(both, linear.apply(ws, edits[::-1]), atol=1e-6)  # linear edits commute
    assert torch.allclose(both, linear.shift(linear.shift(ws, 0, 1.0), 2, edits[1][1]), atol=1e-6)
    warps = Directions(every_set(4)["warped"])
    z = torch.randn(3, 4)
    sequence = warps.apply(z, [(0, 1.0), (1, 1.0)])
    assert torch.allclose(sequence, warps.shift(warps.shift(z, 0, 1.0), 1, 1.0))
    assert not torch.allclose(sequence, warps.apply(z, [(1, 1.0), (0, 1.0)]), atol=1e-4)
    assert torch.equal(warps.apply(z, []), z)
    with pytest.raises(ValueError, match=r"a pair \(index, alpha\)"):
        warps.apply(z, [3])


# ---- 3. the generator's identity and source -------------------------------------------------
def stylegan_view(space: str, **kwargs):
    g = random_generator("stylegan2", space=space, **TINY_STYLEGAN, **kwargs)
    g.source = {"_target_": "generators.load_generator", "path": "weights/tiny.pt", "space": space}
    return g


def test_meta_records_generator_identity_source_space_layers(tmp_path, wplus):
    g = stylegan_view("w+")
    d = Directions(LinearDirections(8, 2, layers=[2, 3]), {"method": "x", "alpha_range": 3.0},
                   generator=g)
    assert d.meta["generator"] == g.identity() and d.meta["generator_source"] == g.source
    assert d.meta["space"] == "w+" and d.meta["layers"] == [2, 3]
    back = Directions.load(d.save(tmp_path / "d.pt"), generator=wplus)
    assert back.meta["generator"] == g.identity() and back.meta["generator_source"] == g.source
    assert (back.space, back.layers, back.format) == ("w+", [2, 3], DIRECTIONS_FORMAT)
    plain = random_generator(latent_dim=4, width=4)
    assert Directions.generator_meta(plain)["generator_source"] == plain.source
    plain.source = None  # a generator built in code: no config to rebuild it
    assert Directions.generator_meta(plain)["generator_source"] is None


def test_z_and_w_views_of_one_checkpoint_are_different_generators(tmp_path):
    path = Directions(LinearDirections(8, 2), generator=stylegan_view("z")).save(tmp_path / "d.pt")
    Directions.load(path, generator=stylegan_view("z"))
    with pytest.raises(ValueError) as err:
        Directions.load(path, generator=stylegan_view("w", truncation_psi=0.7))
    message = str(err.value)
    assert "was made for generator 'stylegan2'" in message
    assert "space 'z' in the file vs 'w' now" in message
    assert "truncation {'psi': 1.0, 'cutoff': None} in the file vs {'psi': 0.7" in message
    assert "use the generator it was made for" in message and "path=weights/tiny.pt" in message
    assert "sha256" not in message  # the same weights


def test_check_generator_lists_every_field_and_keeps_the_size_check(tmp_path, dcgan):
    d = Directions(LinearDirections(4, 2), generator=dcgan)
    d.meta["generator_source"] = None  # no recorded config: the identity describes it
    other = random_generator("dcgan", latent_dim=4, resolution=8, width=4, init_seed=3)
    with pytest.raises(ValueError, match=r"sha256 \w{12}\.\.\. in the file vs \w{12}\.\.\. now; "
                                         r"use the generator it was made for \(generator 'dcgan' "
                                         r"\(dcgan, z space, sha256"):
        d.check_generator(other, source="d.pt")
    with pytest.raises(ValueError, match="4-d latent space, but generator 'dcgan' takes 8-d"):
        d.check_generator(random_generator("dcgan", latent_dim=8, resolution=8, width=4))
    # per-layer directions need the W+ view even when the file records no generator
    layered = Directions(LinearDirections(8, 2, layers=[3]))
    layered.check_generator(random_generator("stylegan2", space="w+", **TINY_STYLEGAN))
    with pytest.raises(ValueError, match=r"layers 3 of per-layer codes.*generator.space=w\+"):
        layered.check_generator(random_generator("stylegan2", space="w", **TINY_STYLEGAN))
    deep = Directions(LinearDirections(8, 2, layers=[5]))
    with pytest.raises(ValueError, match=r"layers \[5\], but generator 'stylegan2' has 4 layers"):
        deep.check_generator(random_generator("stylegan2", space="w+", **TINY_STYLEGAN))


# ---- 4. safe loading ------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, how: str, marker: pathlib.Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch '{self.marker}'",)
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_load_refuses_a_file_that_would_run_code(tmp_path, how):
    marker = tmp_path / "marker"
    good = Directions(LinearDirections(4, 2)).save(tmp_path / "good.pt")
    blob = torch.load(good, weights_only=True)
    blob["meta"]["note"] = _RunsCode(how, marker)
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"refuses to unpickle.*may run code; directions files "
                                         r"hold only tensors and plain data"):
        Directions.load(tmp_path / "evil.pt")
    assert not marker.exists()
    # the control: an unsafe load of the same file does run the code
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_load_refuses_unreadable_and_newer_files(tmp_path):
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match="not a readable torch file"):
        Directions.load(tmp_path / "text.pt")
    blob = torch.load(Directions(LinearDirections(4, 2)).save(tmp_path / "d.pt"), weights_only=True)
    torch.save(dict(blob, format="latent-directions/directions/v3"), tmp_path / "v3.pt")
    with pytest.raises(ValueError, match="format 'latent-directions/directions/v3'.*update the project"):
        Directions.load(tmp_path / "v3.pt")


def test_save_writes_only_plain_data(tmp_path):
    class Opaque:
        def __repr__(self):
            return "Opaque()"

    meta = {"method": "x", "alpha_range": np.float64(6.0), "batches": np.int64(3),
            "config": {"optimizer": Opaque(), "cfg": OmegaConf.create({"a": [1, 2], "b": "${a}"}),
                       "path": pathlib.Path("/data/x"), "shape": (2, 3)},
            "metrics": {"rca": np.float32(0.5), "per_class": np.arange(3)},
            "tensor": torch.ones(2, requires_grad=True)}
    path = Directions(LinearDirections(4, 2), meta).save(tmp_path / "d.pt")
    torch.load(path, weights_only=True)  # what load does
    back = Directions.load(path).meta
    assert back["alpha_range"] == 6.0 and type(back["alpha_range"]) is float
    assert type(back["batches"]) is int and type(back["metrics"]["rca"]) is float
    assert torch.equal(back["metrics"]["per_class"], torch.arange(3))
    assert back["config"] == {"optimizer": "Opaque()", "cfg": {"a": [1, 2], "b": [1, 2]},
                              "path": "/data/x", "shape": (2, 3)}
    assert torch.equal(back["tensor"], torch.ones(2))
    # an object outside the config is refused, and nothing is written
    with pytest.raises(ValueError, match=r"refuses to write meta\['metrics'\]\['what'\] = Opaque\(\)"):
        Directions(LinearDirections(4, 2), {"metrics": {"what": Opaque()}}).save(tmp_path / "bad.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]


# ---- 5. version 1 files ---------------------------------------------------------------------
def write_v1(path, kind: str, made: torch.nn.Module, meta: dict) -> None:
    """A v1 file exactly as the v1 ``Directions.save`` wrote it."""
    config = made.config()
    config.pop("layers")  # v1 sets had no layers
    torch.save({"format": "latent-directions/directions/v1", "kind": kind, "config": config,
                "state_dict": {k: v.detach().cpu() for k, v in made.state_dict().items()},
                "meta": meta}, path)


# The kinds that existed when v1 was the format (later kinds were never written as v1).
V1_KINDS = ("basis", "linear", "ortho", "proj", "vectors", "walk_mlp", "warped")


def test_v1_kinds_are_known():
    assert set(V1_KINDS) <= set(PARAMETRISATIONS)


@pytest.mark.parametrize("kind", V1_KINDS)
def test_v1_files_load_upgraded(tmp_path, kind, dcgan):
    made = every_set(4)[kind]
    meta = {"method": "voynov", "generator": dcgan.identity(), "space": "z", "layers": None,
            "alpha_range": 6.0, "config": {"lr": 1e-4}, "metrics": {"rca": 0.5}, "batches": 10}
    write_v1(tmp_path / "v1.pt", kind, made, meta)
    back = Directions.load(tmp_path / "v1.pt", generator=dcgan)
    z = torch.randn(3, 4)
    assert torch.allclose(back.shift(z, 1, 0.8), made.shift(z, 1, 0.8), atol=1e-6)
    assert back.format == "latent-directions/directions/v1" and back.layers is None
    assert back.meta["space"] == "z" and back.alpha_range() == (6.0, "recorded")
    # re-saved, it is a v2 file
    again = torch.load(back.save(tmp_path / "v2.pt"), weights_only=True)
    assert again["format"] == DIRECTIONS_FORMAT and again["config"]["layers"] is None


def test_very_old_v1_file_without_space_or_alpha_range(tmp_path):
    write_v1(tmp_path / "old.pt", "linear", LinearDirections(4, 2), {"method": "voynov"})
    old = Directions.load(tmp_path / "old.pt")
    assert old.meta["space"] == "z" and old.meta["layers"] is None
    with pytest.raises(ValueError, match="record no alpha_range.*alphas explicitly"):
        old.alpha_range()
    assert old.alpha_range(default=6.0) == (6.0, "default (the file records no alpha_range)")


# ---- 6. the alpha range ---------------------------------------------------------------------
def test_alpha_range_is_recorded_or_explicit():
    assert Directions(LinearDirections(4, 2), {"alpha_range": 0.5}).alpha_range() == (0.5, "recorded")
    assert Directions(LinearDirections(4, 2), {"alpha_range": 3}).alpha_range(6.0) == (3.0, "recorded")
    unknown = Directions(LinearDirections(4, 2), {"alpha_range": None})
    with pytest.raises(ValueError, match="record no alpha_range"):
        unknown.alpha_range()
    assert unknown.alpha_range(2.0) == (2.0, "default (the file records no alpha_range)")


# ---- 7. the traversal renderer --------------------------------------------------------------
def test_render_traversal_on_w_plus(wplus):
    ws = wplus.sample(3, generator=torch.Generator().manual_seed(0))
    d = Directions(LinearDirections(8, 4, init_seed=0))
    alphas = [-2.0, 0.0, 1.0, 3.0]
    images = d.render_traversal(wplus, ws, 2, alphas, batch_size=5)
    assert images.shape == (3, 4, 3, 8, 8)
    assert torch.allclose(images[:, 1], wplus(ws), atol=1e-6)  # alpha 0: the latents' images
    for j, a in enumerate(alphas):  # seed-major, each alpha from the start latent
        assert torch.allclose(images[:, j], wplus(d.shift(ws, 2, a)), atol=1e-5)
    assert torch.allclose(images, d.render_traversal(wplus, ws, 2, torch.tensor(alphas)), atol=1e-6)


def test_layer_restricted_direction_renders_the_edited_w_plus_code(wplus):
    """A direction on layer 3 (the last ToRGB's style at 8 px) renders as the W+ code with only
    layer 3 moved, unlike the same direction on every layer."""
    ws = wplus.sample(2, generator=torch.Generator().manual_seed(1))
    free = LinearDirections(8, 2, init_seed=0)
    layer3 = LinearDirections(8, 2, init_seed=0, layers=[3])
    alphas = [0.0, 2.0]
    images = Directions(layer3).render_traversal(wplus, ws, 1, alphas)
    edited = ws.clone()
    edited[:, 3] += 2.0 * free.vectors()[1]
    assert torch.allclose(images[:, 1], wplus(edited), atol=1e-5)
    assert torch.allclose(images[:, 0], wplus(ws), atol=1e-6)
    everywhere = Directions(free).render_traversal(wplus, ws, 1, alphas)
    assert (images[:, 1] - images[:, 0]).abs().max() > 1e-4  # it does something
    assert not torch.allclose(everywhere[:, 1], images[:, 1], atol=1e-4)
    # on W+ latents broadcast from W, an all-layer direction renders as on W itself
    w_view = random_generator("stylegan2", space="w", **TINY_STYLEGAN)
    w = ws[:, 0]
    assert torch.allclose(Directions(free).render_traversal(w_view, w, 1, alphas),
                          Directions(free).render_traversal(wplus, w[:, None].expand(-1, 4, -1).contiguous(),
                                                            1, alphas), atol=1e-5)


def test_render_traversal_on_dcgan_and_traversal_rows(dcgan):
    z = dcgan.sample(2, generator=torch.Generator().manual_seed(0))
    d = Directions(every_set(4)["warped"])
    alphas = [-1.0, 0.0, 1.0]
    images = d.render_traversal(dcgan, z, 1, alphas, batch_size=4)
    assert images.shape == (2, 3, 3, 8, 8)
    assert torch.allclose(images[:, 1], dcgan(z), atol=1e-6)
    assert torch.allclose(images[:, 2], dcgan(d.shift(z, 1, 1.0)), atol=1e-5)
    rows = d.traversal_rows(dcgan, z, [2, 0], alphas, batch_size=5)
    assert rows.shape == (2, 6, 3, 8, 8)
    assert torch.allclose(rows[0], d.render_traversal(dcgan, z, 2, alphas).flatten(0, 1), atol=1e-6)
    assert torch.allclose(rows[1], d.render_traversal(dcgan, z, 0, alphas).flatten(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="direction indices \\[3\\]"):
        d.traversal_rows(dcgan, z, [3], alphas)
    with pytest.raises(ValueError, match="at least one alpha"):
        d.render_traversal(dcgan, z, 0, [])


def test_render_traversal_passes_classes_per_alpha():
    g = random_generator("stylegan2", space="z", c_dim=3, **TINY_STYLEGAN)
    z = g.sample(3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2, 0, 1])
    d = Directions(LinearDirections(8, 2, init_seed=0))
    images = d.render_traversal(g, z, 0, [0.0, 1.5], y=y, batch_size=4)
    assert torch.allclose(images[:, 0], g(z, y), atol=1e-5)
    assert torch.allclose(images[:, 1], g(d.shift(z, 0, 1.5), y), atol=1e-5)
    rows = d.traversal_rows(g, z, [1, 0], [0.0, 1.5], y=y, batch_size=4)
    assert torch.allclose(rows[1], images.flatten(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="one class index per latent"):
        d.render_traversal(g, z, 0, [0.0], y=y[:2])


def test_baseline_sets_are_fixed_and_keep_layers():
    from directions import baseline_set

    random = baseline_set("random", 6, 4, init_seed=0, layers=[1])
    assert not random.weight.requires_grad and random.layers == [1]
    assert torch.equal(random.vectors(), baseline_set("random", 6, 4, init_seed=0).vectors())
    assert torch.equal(baseline_set("id", 6, 4).vectors(), torch.eye(6)[:4])
    with pytest.raises(ValueError, match="unknown baseline 'linear'"):
        baseline_set("linear", 6, 4)


def test_a_buffer_only_set_reports_where_its_buffers_are():
    # A closed-form basis has buffers, no parameters: rendering asks where it lives, and the
    # answer must be its buffers' device, not the latents' (on a GPU run the indexing of a CPU
    # buffer with CUDA indices fails).
    from directions.artifact import _module_device

    basis = BasisDirections.of(torch.eye(4)[:2])
    assert not list(basis.parameters())
    assert _module_device(basis, torch.device("meta")) == torch.device("cpu")
    assert _module_device(torch.nn.Module(), torch.device("meta")) == torch.device("meta")


def test_a_cached_baseline_belongs_to_the_layers_it_moves(wplus):
    """The baseline cache: random directions on the middle layers of W+ are another set than
    random directions on every layer (the key once left the layers out, and a layer-range run
    read the every-layer baseline)."""
    from directions import baseline_set
    from evaluation.run import _cache_key, baseline_directions
    from metrics.evaluation import EvaluationSettings

    def key(layers):
        learned = Directions(baseline_set("random", 8, 3, init_seed=5, layers=layers),
                             {"alpha_range": 3.0})
        fixed = baseline_directions("random", learned, 0, 3.0)
        assert fixed.layers == layers
        return _cache_key("random", wplus, None, fixed, EvaluationSettings())

    assert key(None) == key(None) and key([1, 2]) == key([1, 2])
    assert len({key(None), key([1, 2]), key([0, 1])}) == 3
