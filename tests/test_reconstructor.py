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
