"""Image distances shared by evaluation (content preservation) and by methods' losses:
L2, the Laplacian-pyramid L1 of Bojanowski et al. (GLO, ICML 2018), and LPIPS where its
backbone weights are on disk (nothing is downloaded).

    Lap1(x, x') = sum_j 2^(2j) |L^j(x) - L^j(x')|_1  /  (pixels of x)
                = sum_j mean |L^j(x) - L^j(x')|          (level j has 4^-j of the pixels)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

# A 5-tap binomial kernel: the usual Gaussian of Laplacian pyramids.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per image (``N``)."""
    return ((x - y) ** 2).flatten(1).mean(1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = _BINOMIAL.to(x)
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels ``L^0 .. L^(levels-2)`` and the low-pass residual (``levels`` in all)."""
    pyramid = []
    for _ in range(levels - 1):
        if min(x.shape[-2:]) < 4:
            break
        low = _blur(x)[..., ::2, ::2]
        up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        pyramid.append(x - up)
        x = low
    pyramid.append(x)
    return pyramid


def lap1(x: torch.Tensor, y: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian-pyramid L1 per image (``N``); differentiable."""
    return sum(((a - b).abs().flatten(1).mean(1))
               for a, b in zip(laplacian_pyramid(x, levels), laplacian_pyramid(y, levels)))


# torchvision's ImageNet weights that lpips builds its trunk from, by network.
LPIPS_TRUNKS = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
                "vgg": ("vgg16", "vgg16-397923af.pth"),
                "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")}


def lpips_weights_path(net: str = "alex") -> Path:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return hub / LPIPS_TRUNKS[net][1]


class LPIPSUnavailable(RuntimeError):
    """LPIPS was asked for, but its backbone weights are not on this machine."""


def make_lpips(net: str = "alex") -> torch.nn.Module:
    """A frozen ``lpips.LPIPS`` built only from files on disk; a clear error otherwise."""
    if net not in LPIPS_TRUNKS:
        raise ValueError(f"unknown LPIPS network {net!r}; use one of {sorted(LPIPS_TRUNKS)}")
    path = lpips_weights_path(net)
    if not path.is_file():
        raise LPIPSUnavailable(
            f"LPIPS ({net}) needs torchvision's ImageNet weights at {path}, which are not there, "
            "and nothing is downloaded at run time. On a machine with network run  python -c "
            f"\"import torchvision; torchvision.models.{LPIPS_TRUNKS[net][0]}(weights='DEFAULT')\"  "
            f"and copy {path.name} to {path.parent}; or use the losses that need no weights "
            "(l2, lap1).")
    import lpips

    model = lpips.LPIPS(net=net, verbose=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
