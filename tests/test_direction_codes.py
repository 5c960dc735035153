"""Each direction set's coordinate per direction (``code``): what the ground-truth benchmark's
encoder protocol learns to read from images (Khrulkov et al.)."""
from __future__ import annotations

import pytest
import torch

from common.errors import UserError
from directions import (
    BasisDirections,
    Directions,
    LayerVectors,
    LinearDirections,
    LocalDirections,
    MLPWalk,
    OrthoDirections,
    RBFWarps,
    VectorDirections,
)


def _latents(n=16, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", [
    lambda: LinearDirections(6, 4, init_seed=1),
    lambda: OrthoDirections(6, 6),
    lambda: VectorDirections(6, 4, init_seed=1),
    lambda: LocalDirections(6, 4, init_seed=1),
])
def test_a_vector_sets_code_is_the_projection_of_the_centred_latent(make):
    torch.manual_seed(0)
    directions = make()
    z, centre = _latents(), torch.randn(6)
    expected = (z - centre) @ directions.vectors().T
    assert torch.allclose(directions.code(z, centre), expected, atol=1e-6)
    assert directions.code(z).shape == (16, directions.num_directions)


def test_moving_along_an_orthonormal_direction_moves_only_its_code():
    torch.manual_seed(0)
    ortho = OrthoDirections(6, 6)
    with torch.no_grad():
        ortho.skew.normal_()
    z = _latents()
    moved = z + 2.5 * ortho.vectors()[1]
    change = ortho.code(moved) - ortho.code(z)
    assert torch.allclose(change[:, 1], torch.full((16,), 2.5), atol=1e-5)
    assert change[:, [0, 2, 3, 4, 5]].abs().max() < 1e-5


def test_a_basis_code_is_its_projection_whatever_its_units():
    basis = BasisDirections(6, 3)
    basis.basis.copy_(torch.eye(6)[:3])
    basis.scales.copy_(torch.tensor([2.0, 3.0, 4.0]))
    z = _latents()
    assert torch.allclose(basis.code(z), z[:, :3])


def test_per_layer_codes_are_read_on_the_sets_layers():
    linear = LinearDirections(6, 2, init="identity", layers=[1, 2])
    w = _latents(8, 6).unsqueeze(1).repeat(1, 4, 1)  # W+ from one w: every layer the same
    w[:, 0] += 100.0  # a layer the set does not move: not read
    assert torch.allclose(linear.code(w), w[:, 1, :2])
    per_layer = LayerVectors(6, 2, num_layers=4, layers=[1, 2], init_seed=0)
    centred = w.index_select(1, torch.tensor([1, 2]))
    theta = per_layer.theta.detach()
    expected = torch.einsum("nld,kld->nk", centred, theta / theta.flatten(1).norm(dim=1)[:, None, None])
    assert torch.allclose(per_layer.code(w), expected, atol=1e-5)
    with pytest.raises(UserError, match="W\\+ latents"):
        per_layer.code(_latents(8, 6))


def test_a_warps_code_is_its_potential_and_grows_along_its_path():
    torch.manual_seed(0)
    warps = RBFWarps(6, 3, num_dipoles=4)
    z = _latents()
    code = warps.code(z)
    assert torch.allclose(code[:, 2], warps.potential(z, 2))
    # A small step along warp k raises f_k: the code orders the latents along its path.
    with torch.no_grad():
        moved = warps.shift(z, 2, 0.05)
    assert (warps.code(moved)[:, 2] > code[:, 2]).float().mean() > 0.9


def test_sets_without_a_coordinate_are_refused_with_the_reason():
    walk = MLPWalk(6, 2)
    with pytest.raises(UserError, match="no coordinate per direction.*n/a"):
        walk.code(_latents())
    assert walk.no_code and LinearDirections(6, 2).no_code is None
    per_class = Directions(VectorDirections(6, 4, init_seed=0), {"direction_classes": [0, 0, 1, 1]})
    assert per_class.no_code
    with pytest.raises(UserError, match="class-dependent"):
        per_class.code(_latents())
    assert Directions(LinearDirections(6, 2, init_seed=0)).code(_latents()).shape == (16, 2)
