import torch

from datamodules.world import FACTORS, SHAPES, ShapesWorld, WorldDataModule, hue_to_rgb


def factors(**values):
    base = {"shape": 1, "scale": 0.5, "rotation": 0.0, "x": 0.5, "y": 0.5, "hue": 0.0}
    base.update(values)
    return torch.tensor([[float(base[name]) for name in FACTORS]])


def centroid(mask):
    ys, xs = torch.meshgrid(torch.arange(mask.shape[-2]), torch.arange(mask.shape[-1]), indexing="ij")
    total = mask.sum()
    return (mask * xs).sum() / total, (mask * ys).sum() / total


def test_render_shape_range_and_determinism():
    world = ShapesWorld(32)
    f = world.sample_factors(16, torch.Generator().manual_seed(0))
    images = world.render(f)
    assert images.shape == (16, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, world.render(f))
    again = world.sample_factors(16, torch.Generator().manual_seed(0))
    assert torch.equal(f, again)
    assert set(f[:, 0].tolist()) <= {0.0, 1.0, 2.0}


def test_centroid_follows_x_and_y():
    world = ShapesWorld(32)
    xs = [centroid(world.mask(factors(x=x)))[0].item() for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    ys = [centroid(world.mask(factors(y=y)))[1].item() for y in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a + 1 for a, b in zip(xs, xs[1:]))  # moves right, > 1 px per quarter
    assert all(b > a + 1 for a, b in zip(ys, ys[1:]))  # moves down
    assert abs(xs[2] - 15.5) < 0.3 and abs(ys[2] - 15.5) < 0.6  # centred


def test_area_follows_scale_for_every_shape():
    world = ShapesWorld(32)
    for shape in range(len(SHAPES)):
        areas = [world.mask(factors(shape=shape, scale=s)).sum().item() for s in (0.0, 0.5, 1.0)]
        assert areas[0] < areas[1] < areas[2]
        assert areas[2] / areas[0] > 2.5  # radius 0.30 -> 0.55: area x 3.4


def test_circle_area_matches_geometry():
    # radius 0.55 of the half-canvas (16 px) = 8.8 px: area pi r^2 = 243 px, anti-aliased edge
    area = ShapesWorld(32).mask(factors(shape=1, scale=1.0)).sum().item()
    assert abs(area - torch.pi * 8.8**2) < 5


def test_rotation_moves_square_and_triangle_but_not_circle():
    world = ShapesWorld(32)
    for shape, moves in ((0, True), (1, False), (2, True)):
        a = world.mask(factors(shape=shape, rotation=0.0))
        b = world.mask(factors(shape=shape, rotation=0.5))
        c = world.mask(factors(shape=shape, rotation=1.0))  # a full symmetry period: same picture
        assert ((a - b).abs().sum() > 5) == moves
        assert (a - c).abs().max() < 1e-4


def test_hue_colours():
    rgb = hue_to_rgb(torch.tensor([0.0, 1 / 3, 2 / 3]))
    assert torch.allclose(rgb, torch.eye(3), atol=1e-6)
    image = ShapesWorld(32).render(factors(hue=1 / 3))[0]
    assert image[1, 16, 16] > 0.99 and image[0, 16, 16] < -0.99  # green inside
    assert image[:, 0, 0].eq(-1).all()  # black outside


def test_shapes_differ_and_resolution_64():
    world = ShapesWorld(64)
    masks = [world.mask(factors(shape=s, scale=1.0)) for s in range(3)]
    assert masks[0].shape == (1, 64, 64)
    for i in range(3):
        for j in range(i + 1, 3):
            assert (masks[i] - masks[j]).abs().sum() > 20


def test_world_datamodule_batches():
    dm = WorldDataModule(batch_size=5, seed=3)
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (5, 3, 32, 32) and batch["factors"].shape == (5, 6)
    assert torch.allclose(ShapesWorld(32).render(batch["factors"]), batch["images"])


def test_inverse_rendering_recovers_factors():
    world = ShapesWorld(32)
    truth = world.sample_factors(12, torch.Generator().manual_seed(1))
    fitted, error = world.fit_factors(world.render(truth))
    assert error.max() < 0.02
    assert torch.equal(fitted[:, 0], truth[:, 0])
    assert (fitted[:, [1, 3, 4]] - truth[:, [1, 3, 4]]).abs().max() < 0.05
    hue_gap = (fitted[:, 5] - truth[:, 5]).abs()
    assert torch.minimum(hue_gap, 1 - hue_gap).max() < 0.02
    # noise is not a shape: its best explanation is poor
    _, noise_error = world.fit_factors(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert noise_error.min() > 0.3


def test_assessment_says_where_the_error_lies():
    from generators.assess import error_by_kind_and_size, error_regions, fit, world_statistics

    world = ShapesWorld(32)
    images = world.render(world.sample_factors(8, torch.Generator().manual_seed(2)))
    # a softened outline: the error moves to the band around the edge
    soft = torch.nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
    # a haze over the background: the error moves off the shape
    hazy = images + 0.1 * (images.amax(1, keepdim=True) < -0.99).float()
    for kind, batch, region in (("soft", soft, "edge"), ("hazy", hazy, "background")):
        factors, error = fit(batch, world)
        where = error_regions(batch, factors, world)
        assert where[f"{region}_error_share"] > 0.7, (kind, where)
        assert abs(sum(where[f"{r}_error_share"] for r in ("edge", "background", "inside")) - 1) < 1e-5
        assert abs(sum(where[f"{r}_pixels"] for r in ("edge", "background", "inside")) - 1) < 1e-5
        stats = world_statistics(factors, error)
        assert stats["rerender_l1"] == error.mean().item()
        assert stats["clean_fraction"] == (error < 0.05).float().mean().item()
        # ... and on which shapes: the groups' means are the error's mean where they are
        by = error_by_kind_and_size(factors, error)
        kinds = factors[:, 0].long()
        assert by["circle_l1"] == error[kinds == 1].mean().item() or not (kinds == 1).any()
        sizes = torch.tensor([(factors[:, 1].clamp(0, 1) < 1 / 3).sum(),
                              ((factors[:, 1] >= 1 / 3) & (factors[:, 1] < 2 / 3)).sum(),
                              (factors[:, 1].clamp(0, 1) >= 2 / 3).sum()])
        weights = {"small": sizes[0], "medium": sizes[1], "large": sizes[2]}
        mean = sum(by[f"{k}_l1"] * n for k, n in weights.items() if n) / sizes.sum()
        assert abs(mean - error.mean().item()) < 1e-5
