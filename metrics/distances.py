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

from common.errors import UserError

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
        raise UserError(f"unknown LPIPS network {net!r}; use one of {sorted(LPIPS_TRUNKS)}")
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


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (torchvision's; reflect padding, radius 3 sigma); ``sigma <= 0``: x itself."""
    if sigma <= 0:
        return x
    from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

    size = 2 * max(1, int(round(3 * sigma))) + 1  # taps -r..r; torchvision pads reflect by size // 2
    return tv_gaussian_blur(x, [size, size], [float(sigma), float(sigma)])


class ImageDistance(torch.nn.Module):
    """A weighted sum of image distances, per image (``N``): the one reconstruction / content
    loss of the methods (Steerability's walk loss, EYE's content term, inversion, GLO-style
    fits, Plumerault's trajectories)

        d(x, t) = w_l2 L2 + w_lap1 Lap1 + w_lpips LPIPS

    optionally on the ``mask``ed region only (pixels outside it take the target's values, so
    they add nothing; L2 is divided by the masked share, the mean over the valid pixels) and
    optionally after a Gaussian blur of both images (a low-pass error that does not chase the
    pixels a generator cannot draw exactly).

    Args:
        l2, lap1, lpips: the weights (0 leaves a term out). LPIPS needs its backbone weights on
            disk (``make_lpips``); asked for without them, this fails at construction, before
            any work.
        lpips_net: LPIPS's network (alex, vgg, squeeze).
        levels: Laplacian pyramid levels of Lap1.
        blur_sigma: Gaussian blur of both images first (pixels; 0: none).
    """

    def __init__(self, l2: float = 1.0, lap1: float = 0.0, lpips: float = 0.0,
                 lpips_net: str = "alex", levels: int = 4, blur_sigma: float = 0.0) -> None:
        super().__init__()
        weights = {"l2": float(l2), "lap1": float(lap1), "lpips": float(lpips)}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise UserError(f"image distance weights must be >= 0 with one of them positive, got "
                             f"{weights}")
        if blur_sigma < 0:
            raise UserError(f"blur_sigma must be >= 0, got {blur_sigma}")
        self.weights, self.levels, self.blur_sigma = weights, levels, float(blur_sigma)
        self.lpips = make_lpips(lpips_net) if weights["lpips"] > 0 else None

    @classmethod
    def named(cls, name: str, **kwargs) -> "ImageDistance":
        """One term by name (``l2``, ``lap1``, ``lpips``) or a sum ``l2+lap1`` (weights 1)."""
        terms = [t.strip() for t in str(name).split("+")]
        bad = [t for t in terms if t not in ("l2", "lap1", "lpips")]
        if bad or not terms:
            raise UserError(f"unknown image distance {name!r}: use l2, lap1, lpips or a sum such "
                             "as l2+lap1")
        return cls(**{t: 1.0 if t in terms else 0.0 for t in ("l2", "lap1", "lpips")}, **kwargs)

    def describe(self) -> str:
        terms = " + ".join(f"{w:g} {k}" for k, w in self.weights.items() if w)
        return terms + (f" (blur sigma {self.blur_sigma:g})" if self.blur_sigma else "")

    def train(self, mode: bool = True) -> "ImageDistance":
        return super().train(False)  # LPIPS's dropout stays off

    def forward(self, x: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        share = None
        if mask is not None:
            x = x * mask + target * (1 - mask)
            share = mask.expand_as(x).flatten(1).mean(1).clamp_min(1e-3)
        x, target = gaussian_blur(x, self.blur_sigma), gaussian_blur(target, self.blur_sigma)
        w = self.weights
        total = x.new_zeros(x.shape[0])
        if w["l2"]:
            d = l2(x, target)
            total = total + w["l2"] * (d if share is None else d / share)
        if w["lap1"]:
            total = total + w["lap1"] * lap1(x, target, self.levels)
        if w["lpips"]:
            total = total + w["lpips"] * self.lpips(x, target).flatten()
        return total


def psnr_of_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2) from their mean squared errors."""
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (``N``, dB) of images in [-1, 1]."""
    return psnr_of_mse(l2(x.float(), y.float()))
