import pytest
import torch

from directions import Directions, LinearDirections, OrthoDirections, ProjDirections
from generators import random_generator


def test_linear_shift_adds_unit_vector():
    d = LinearDirections(4, 3, init_seed=0)
    z = torch.zeros(2, 4)
    out = d.shift(z, 1, 2.0)
    assert torch.allclose(out.norm(dim=1), torch.tensor([2.0, 2.0]))
    per_sample = d.shift(z, torch.tensor([0, 2]), torch.tensor([1.0, -1.0]))
    assert torch.allclose(per_sample[0], d.vectors()[0]) and torch.allclose(per_sample[1], -d.vectors()[2])


def test_ortho_is_orthonormal_and_refuses_other_counts():
    d = OrthoDirections(5)
    with torch.no_grad():
        d.skew.normal_()
    v = d.vectors()
    assert torch.allclose(v @ v.T, torch.eye(5), atol=1e-5)
    with pytest.raises(ValueError, match="must equal the latent size 5"):
        OrthoDirections(5, 3)


def test_proj_with_zero_bias_is_linear():
    p = ProjDirections(4, 3)
    lin = LinearDirections(4, 3)
    with torch.no_grad():
        lin.weight.copy_(p.weight)
    z = torch.randn(5, 4)
    assert torch.allclose(p.shift(z, 2, -1.5), lin.shift(z, 2, -1.5), atol=1e-6)


def test_identity_axes():
    d = LinearDirections(4, 3, init="identity", trainable=False)
    assert torch.equal(d.vectors(), torch.eye(4)[:3]) and not d.weight.requires_grad
    with pytest.raises(ValueError, match="cannot exceed"):
        LinearDirections(4, 5, init="identity")


def test_save_load_roundtrip_atomic(tmp_path):
    g = random_generator(latent_dim=4, width=4)
    d = Directions(LinearDirections(4, 3, init_seed=1), {"method": "x", "generator": g.identity()})
    path = d.save(tmp_path / "directions.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["directions.pt"]  # no temp file left
    back = Directions.load(path, generator=g)
    z = torch.randn(2, 4)
    assert torch.allclose(back.shift(z, 2, 0.5), d.shift(z, 2, 0.5))
    assert back.meta["method"] == "x" and back.num_directions == 3
    assert back.traverse(z, 1, [-1, 0, 1]).shape == (2, 3, 4)


def test_load_refuses_other_generator(tmp_path):
    g = random_generator(latent_dim=4, width=4)
    path = Directions(LinearDirections(4, 3), {"generator": g.identity()}).save(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="4-d latent space.*takes 8-d"):
        Directions.load(path, generator=random_generator(latent_dim=8, width=4))
    with pytest.raises(ValueError, match="was made for generator"):
        Directions.load(path, generator=random_generator(latent_dim=4, width=4, init_seed=5))


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="directions file not found"):
        Directions.load(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"not a directions file.*missing keys \['config'"):
        Directions.load(tmp_path / "w.pt")


def test_rbf_gradient_matches_autograd():
    from directions import RBFWarps

    warps = RBFWarps(6, 3, num_dipoles=4, init_seed=0)
    z = torch.randn(5, 6, requires_grad=True)
    index = torch.tensor([0, 1, 2, 1, 0])
    (auto,) = torch.autograd.grad(warps.potential(z, index).sum(), z)
    assert torch.allclose(warps.gradient(z, index), auto, atol=1e-6)


def test_rbf_warps_with_tiny_gamma_are_linear_directions():
    from directions import RBFWarps

    warps = RBFWarps(6, 2, num_dipoles=3, gamma=1e-7, init_seed=0)
    linear = warps.support[:, :3].sum(1)  # sum of the +v of each dipole
    linear = linear / linear.norm(dim=1, keepdim=True)
    z = torch.randn(4, 6)
    for k in range(2):
        walked = warps.shift(z, k, 2.0)
        assert torch.allclose(walked - z, 2.0 * linear[k].expand(4, -1), atol=1e-4)


def test_rbf_shift_walks_in_small_steps_and_round_trips(tmp_path):
    from directions import RBFWarps

    warps = RBFWarps(6, 2, num_dipoles=4, gamma=0.5, traversal_step=0.1, init_seed=1)
    z = torch.randn(3, 6)
    one_step = warps.step(z, 0, 3.0)
    walked = warps.shift(z, 0, 3.0)
    assert torch.allclose((one_step - z).norm(dim=1), torch.full((3,), 3.0))
    # 30 steps of 0.1 along a curving gradient field: a path of length 3 that bends
    assert torch.all((walked - z).norm(dim=1) <= 3.0 + 1e-4)
    assert not torch.allclose(walked, one_step, atol=1e-2)
    path = Directions(warps, {"method": "warped"}).save(tmp_path / "w.pt")
    loaded = Directions.load(path)
    assert torch.allclose(loaded.shift(z, 1, 1.5), warps.shift(z, 1, 1.5))
