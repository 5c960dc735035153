import torch

from regressors.reconstructor import LeNetReconstructor, TimmReconstructor, build_reconstructor


def test_lenet_for_small_images():
    r = build_reconstructor(16, 32)
    assert isinstance(r, LeNetReconstructor)
    logits, shift = r(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 16) and shift.shape == (3,)


def test_timm_resnet_with_six_channels_for_large_images():
    r = build_reconstructor(5, 128)
    assert isinstance(r, TimmReconstructor)
    assert r.trunk.conv1.in_channels == 6  # the pair is stacked on channels
    logits, shift = r(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5) and shift.shape == (2,)


def test_nested_reconstructor_config_builds_the_configured_network():
    """method.reconstructor is a nested _target_: its fields reach the network, and a
    user's own callable with the (num_directions, resolution) signature replaces it."""
    from conftest import compose_cfg  # tests/ is on the path (a "tests" package of another project may be installed)

    from generators import random_generator
    from train import build_method

    cfg = compose_cfg(["method=voynov", "method.reconstructor.width=8",
                         "method.reconstructor.hidden=32"])
    generator = random_generator("dcgan", init_seed=0)
    module = build_method(cfg, generator)
    first_conv = module.reconstructor.trunk[0]
    assert isinstance(module.reconstructor, LeNetReconstructor) and first_conv.out_channels == 8
    assert module.reconstructor.direction_head.in_features == 32

    cfg = compose_cfg(["method=warped", "method.num_directions=4",
                         "method.reconstructor._target_=regressors.reconstructor.TimmReconstructor",
                         "~method.reconstructor.kind", "~method.reconstructor.width",
                         "~method.reconstructor.hidden"])
    module = build_method(cfg, generator)
    assert isinstance(module.reconstructor, TimmReconstructor)
    assert module.reconstructor.direction_head.out_features == 4
