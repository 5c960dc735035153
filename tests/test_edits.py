"""The known edits of GAN Steerability: what each does to a rendered shape, and its mask."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from datamodules.world import ShapesWorld
from editing.edits import EDITS, Edit, get_edit

RES = 32
WORLD = ShapesWorld(RES)


def _render(*rows: list[float]) -> torch.Tensor:
    """Images of the world for factor rows (shape, scale, rotation, x, y, hue)."""
    return WORLD.render(torch.tensor(rows, dtype=torch.float32))


def _centroid_and_area(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroid (x, y) in pixels and area of the shape, from coverage on a black background."""
    coverage = (images.max(dim=1).values + 1) / 2
    area = coverage.sum((1, 2))
    centres = torch.arange(RES, dtype=torch.float32) + 0.5
    x = (coverage.sum(1) * centres).sum(1) / area
    y = (coverage.sum(2) * centres).sum(1) / area
    return x, y, area


# A centred shape of each kind, and an off-centre one, all well inside the canvas.
CENTRED = _render([0, 0.5, 0.1, 0.5, 0.5, 0.3], [1, 0.5, 0, 0.5, 0.5, 0.6],
                  [2, 0.5, 0.2, 0.5, 0.5, 0.9], [1, 0.3, 0, 0.6, 0.4, 0.1])


@pytest.mark.parametrize("name", sorted(EDITS))
def test_identity_parameters_return_the_input_with_a_full_mask(name):
    edit = get_edit(name)
    edited, mask = edit.apply(CENTRED, edit.identity_alpha(len(CENTRED)))
    assert edited.shape == CENTRED.shape and mask.shape == (len(CENTRED), 1, RES, RES)
    assert mask.dtype == CENTRED.dtype
    assert torch.allclose(edited, CENTRED, atol=1e-5)
    assert bool((mask == 1).all())


@pytest.mark.parametrize("name, axis, sign", [("shift_x", 0, 1), ("shift_x", 0, -1),
                                              ("shift_y", 1, 1), ("shift_y", 1, -1)])
def test_shift_moves_the_shape_and_masks_the_uncovered_lines(name, axis, sign):
    x0, y0, area0 = _centroid_and_area(CENTRED)
    edited, mask = get_edit(name).apply(CENTRED, torch.full((len(CENTRED),), 4.0 * sign))
    x1, y1, area1 = _centroid_and_area(edited)
    moved, still = (x1 - x0, y1 - y0) if axis == 0 else (y1 - y0, x1 - x0)
    assert torch.allclose(moved, torch.full_like(moved, 4.0 * sign), atol=0.3)
    assert torch.allclose(still, torch.zeros_like(still), atol=0.3)
    assert torch.allclose(area1, area0, rtol=1e-3)
    # Columns (rows for shift_y) uncovered: the first 4 moving forward, the last 4 backward.
    lines = mask[:, 0] if axis == 1 else mask[:, 0].transpose(1, 2)  # N x line x position
    expected = torch.ones(RES)
    if sign > 0:
        expected[:4] = 0
    else:
        expected[-4:] = 0
    assert torch.equal(lines, expected.view(1, RES, 1).expand_as(lines))
    assert bool((edited[mask.expand_as(edited) == 0] == -1).all())  # invented pixels are black


def test_per_sample_parameters_are_applied_to_their_own_images():
    alpha = torch.tensor([-3.0, 0.0, 2.0, 5.0])
    batch, _ = get_edit("shift_x").apply(CENTRED, alpha)
    for i in range(len(CENTRED)):
        one, _ = get_edit("shift_x").apply(CENTRED[i:i + 1], alpha[i:i + 1])
        assert torch.allclose(batch[i:i + 1], one, atol=1e-6)
    scalar, _ = get_edit("shift_x").apply(CENTRED, 2.0)  # a number is taken for every sample
    assert torch.allclose(scalar[2], batch[2], atol=1e-6)


def _zoomed(size: float, factor: float):
    """A centred square and circle of ``size``, zoomed by ``factor``: their centroids and areas
    before and after, and the edit's mask."""
    images = _render([1, size, 0, 0.5, 0.5, 0.2], [0, size, 0.1, 0.5, 0.5, 0.7])
    edited, mask = get_edit("zoom").apply(images, torch.full((2,), factor))
    return _centroid_and_area(images), _centroid_and_area(edited), mask


def test_zoom_in_doubles_a_small_centred_shape_and_keeps_a_full_mask():
    (x0, y0, area0), (x1, y1, area1), mask = _zoomed(0.0, 2.0)
    assert torch.allclose(area1 / area0, torch.full((2,), 4.0), rtol=0.1)
    assert torch.allclose(x1, x0, atol=0.3) and torch.allclose(y1, y0, atol=0.3)
    assert bool((mask == 1).all())


def test_zoom_out_halves_the_shape_with_an_invalid_border():
    (_, _, area0), (_, _, area1), mask = _zoomed(1.0, 0.5)
    assert torch.allclose(area1 / area0, torch.full((2,), 0.25), rtol=0.1)
    # The original lands on the central 16 x 16 pixels; everything around it is invented.
    expected = torch.zeros(RES, RES)
    expected[8:24, 8:24] = 1
    assert torch.equal(mask[:, 0], expected.expand(2, RES, RES))
    # An off-centre shape moves halfway towards the centre.
    off = _render([1, 0.3, 0, 0.8, 0.3, 0.5])
    x0, y0, _ = _centroid_and_area(off)
    x1, y1, _ = _centroid_and_area(get_edit("zoom").apply(off, 0.5)[0])
    assert torch.allclose(x1 - RES / 2, (x0 - RES / 2) / 2, atol=0.3)
    assert torch.allclose(y1 - RES / 2, (y0 - RES / 2) / 2, atol=0.3)


@pytest.mark.parametrize("factor", [0.5, 1.6])
def test_scale_resizes_an_off_centre_shape_in_place(factor):
    """``scale`` changes the size about the shape's own centre (zoom would move it)."""
    off = _render([1, 0.3, 0, 0.75, 0.3, 0.5], [0, 0.4, 0.1, 0.3, 0.7, 0.2])
    x0, y0, area0 = _centroid_and_area(off)
    edited, mask = get_edit("scale").apply(off, factor)
    x1, y1, area1 = _centroid_and_area(edited)
    assert torch.allclose(area1 / area0, torch.full((2,), factor ** 2), rtol=0.12)
    assert torch.allclose(x1, x0, atol=0.3) and torch.allclose(y1, y0, atol=0.3)
    assert mask.shape == (2, 1, RES, RES)
    with pytest.raises(ValueError, match="positive"):
        get_edit("scale").apply(off, -1.0)


def test_zoom_rejects_non_positive_factors():
    with pytest.raises(ValueError, match="positive"):
        get_edit("zoom").apply(CENTRED, torch.tensor([1.0, 0.0, 2.0, 1.0]))


def test_rotate_is_counter_clockwise_on_screen():
    right = _render([1, 0.3, 0, 0.8, 0.5, 0.4], [0, 0.3, 0.1, 0.8, 0.5, 0.8])
    x0, y0, _ = _centroid_and_area(right)
    offset = x0 - RES / 2
    assert bool((offset > 3).all()) and torch.allclose(y0, torch.full_like(y0, RES / 2), atol=0.3)
    # Counter-clockwise on screen: right goes up (smaller y), and -90 sends it down.
    for degrees, dy in ((90.0, -1), (-90.0, 1)):
        x1, y1, _ = _centroid_and_area(get_edit("rotate").apply(right, degrees)[0])
        assert torch.allclose(x1, torch.full_like(x1, RES / 2), atol=0.3)
        assert torch.allclose(y1 - RES / 2, dy * offset, atol=0.3)
    # 45 degrees: up and to the right, at the same distance.
    x1, y1, _ = _centroid_and_area(get_edit("rotate").apply(right, 45.0)[0])
    assert torch.allclose(x1 - RES / 2, offset / 2**0.5, atol=0.3)
    assert torch.allclose(y1 - RES / 2, -offset / 2**0.5, atol=0.3)


def test_rotate_masks_the_corners():
    _, mask = get_edit("rotate").apply(CENTRED, torch.tensor([45.0, 30.0, -45.0, 10.0]))
    for corner in (mask[:, 0, 0, 0], mask[:, 0, 0, -1], mask[:, 0, -1, 0], mask[:, 0, -1, -1]):
        assert bool((corner == 0).all())
    assert bool((mask[:, 0, 8:24, 8:24] == 1).all())
    # A quarter turn maps a square pixel grid onto itself: nothing is invented.
    _, quarter = get_edit("rotate").apply(CENTRED, 90.0)
    assert bool((quarter == 1).all())


def test_color_adds_per_channel_offsets_and_clamps():
    red = _render([1, 0.5, 0, 0.5, 0.5, 0.0])  # (1, -1, -1) on the shape, -1 around it
    assert torch.allclose(red[0, :, 16, 16], torch.tensor([1.0, -1.0, -1.0]))
    edited, mask = get_edit("color").apply(red, torch.tensor([[0.25, 0.5, -0.25]]))
    assert torch.allclose(edited[0, :, 16, 16], torch.tensor([1.0, 0.0, -1.0]))  # R, B clamped
    assert torch.allclose(edited[0, :, 0, 0], torch.tensor([-0.5, 0.0, -1.0]))
    assert edited.min() >= -1 and edited.max() <= 1
    assert mask.shape == (1, 1, RES, RES) and bool((mask == 1).all())


def test_brightness_adds_one_offset_to_every_channel_and_clamps():
    red = _render([1, 0.5, 0, 0.5, 0.5, 0.0])
    edited, mask = get_edit("brightness").apply(red, torch.tensor([0.25]))
    assert torch.allclose(edited[0, :, 16, 16], torch.tensor([1.0, -0.5, -0.5]))
    assert torch.allclose(edited[0, :, 0, 0], torch.full((3,), -0.5))
    darker, _ = get_edit("brightness").apply(red, torch.tensor([-0.5]))
    assert torch.allclose(darker[0, :, 16, 16], torch.tensor([0.0, -1.0, -1.0]))
    assert mask.shape == (1, 1, RES, RES) and bool((mask == 1).all())


def test_wrong_parameter_shapes_are_refused():
    with pytest.raises(ValueError, match="color.*\\(4, 3\\)"):
        get_edit("color").apply(CENTRED, torch.zeros(4))
    with pytest.raises(ValueError, match="shift_x.*\\(4,\\)"):
        get_edit("shift_x").apply(CENTRED, torch.zeros(3))


@pytest.mark.parametrize("name, low, high", [
    ("zoom", 0.25, 4.0), ("shift_x", -8.0, 8.0), ("shift_y", -8.0, 8.0),
    ("rotate", -45.0, 45.0), ("color", -0.5, 0.5), ("brightness", -0.5, 0.5)])
def test_sample_draws_in_the_documented_ranges_deterministically(name, low, high):
    edit = get_edit(name)
    alpha = edit.sample(256, torch.Generator().manual_seed(0), RES)
    assert alpha.shape == ((256,) if edit.dims == 1 else (256, edit.dims))
    assert bool((alpha >= low).all()) and bool((alpha <= high).all())
    assert alpha.min() < low + 0.1 * (high - low) and alpha.max() > high - 0.1 * (high - low)
    assert torch.equal(alpha, edit.sample(256, torch.Generator().manual_seed(0), RES))
    assert not torch.equal(alpha, edit.sample(256, torch.Generator().manual_seed(1), RES))
    walk = edit.to_walk(alpha, RES)
    assert walk.shape == (256, edit.dims)
    assert bool((walk.abs() <= 2 + 1e-6).all())
    assert torch.allclose(edit.to_walk(edit.identity_alpha(3), RES), torch.zeros(3, edit.dims))


def test_zoom_samples_zoom_in_and_out_equally_often():
    for n in (256, 7):
        alpha = get_edit("zoom").sample(n, torch.Generator().manual_seed(3), RES)
        assert int((alpha < 1).sum()) == n // 2 and int((alpha >= 1).sum()) == n - n // 2
    # Shuffled: zoom-outs are not all in the first half of the batch.
    alpha = get_edit("zoom").sample(256, torch.Generator().manual_seed(3), RES)
    assert 0 < int((alpha[:128] < 1).sum()) < 128


@pytest.mark.parametrize("name", ["zoom", "shift_x", "shift_y", "rotate", "color", "brightness"])
def test_walk_range_is_the_largest_step_of_the_sampled_range(name):
    edit = get_edit(name)
    steps = edit.to_walk(edit.sample(4096, torch.Generator().manual_seed(0), RES), RES).abs()
    assert float(steps.max()) <= edit.walk_range + 1e-6
    assert float(steps.max()) > 0.98 * edit.walk_range


def test_to_walk_steps():
    zoom = get_edit("zoom").to_walk(torch.tensor([2.0, 0.5, 1.0, 4.0]), RES)
    assert torch.allclose(zoom, torch.tensor([[1.0], [-1.0], [0.0], [2.0]]))
    shift = get_edit("shift_x").to_walk(torch.tensor([8.0, -4.0]), RES)
    assert torch.allclose(shift, torch.tensor([[1.0], [-0.5]]))
    assert torch.allclose(get_edit("shift_y").to_walk(torch.tensor([16.0]), 64), torch.ones(1, 1))
    assert torch.allclose(get_edit("rotate").to_walk(torch.tensor([45.0, -90.0]), RES),
                          torch.tensor([[1.0], [-2.0]]))
    colour = torch.tensor([[0.1, -0.2, 0.3]])
    assert torch.equal(get_edit("color").to_walk(colour, RES), colour)
    assert torch.equal(get_edit("brightness").to_walk(torch.tensor([0.3]), RES),
                       torch.tensor([[0.3]]))


def test_registry_lookup_and_frozen_descriptions():
    assert set(EDITS) == {"zoom", "scale", "shift_x", "shift_y", "rotate", "color", "brightness"}
    assert all(isinstance(edit, Edit) and edit.name == name for name, edit in EDITS.items())
    assert get_edit("color").dims == 3 and get_edit("zoom").identity == 1.0
    with pytest.raises(ValueError, match="'blur'.*zoom, scale, shift_x, shift_y, rotate, color, brightness"):
        get_edit("blur")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_edit("zoom").dims = 2


@pytest.mark.parametrize("name", sorted(EDITS))
def test_from_walk_inverts_to_walk(name):
    edit = EDITS[name]
    alpha = edit.sample(8, torch.Generator().manual_seed(0), 32)
    assert torch.allclose(edit.from_walk(edit.to_walk(alpha, 32), 32), alpha, atol=1e-5)
