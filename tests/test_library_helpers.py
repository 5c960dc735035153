"""The helpers that call a library (torchvision's Gaussian blur, torch.corrcoef) against the
hand-written formulas they replaced, and the hand-written ones kept (linear_fit, spearman_rows)
against explicit math, on random inputs and the edge cases their callers can meet."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.fit_free.plumerault import spearman_rows
from metrics.curves import linear_fit, pearson
from metrics.distances import gaussian_blur


# ---- gaussian_blur: torchvision against the former separable blur --------------------------
def separable_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The former hand-written blur: taps -r..r, r = max(1, round(3 sigma)), reflect padding."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# radius 1 (0.1), even and odd radii (0.5 -> 2 by round half to even, 1 -> 3, 4/3 -> 4, 2.5 -> 8)
@pytest.mark.parametrize("dtype,sigmas,atol", [(torch.float32, (0.1, 0.5, 1.0, 4 / 3, 2.5), 2e-6),
                                               (torch.float64, (0.5, 1.0), 1e-13)])
def test_gaussian_blur_matches_the_separable_formula(dtype, sigmas, atol):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 11, 12, generator=gen, dtype=dtype)  # odd and even sides, RGB batch
    for sigma in sigmas:
        out = gaussian_blur(x, sigma)
        assert out.shape == x.shape and out.dtype == dtype
        assert (out - separable_blur(x, sigma)).abs().max() <= atol


def test_gaussian_blur_edge_cases_and_gradient():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 9, 9, generator=gen)  # one channel (a mask-like input)
    assert gaussian_blur(x, 0.0) is x and gaussian_blur(x, -1.0) is x
    assert torch.allclose(gaussian_blur(x, 1.0), separable_blur(x, 1.0), atol=2e-6)
    const = torch.full((1, 3, 8, 8), 0.25)
    assert torch.allclose(gaussian_blur(const, 1.5), const, atol=1e-6)  # reflect: no dark border
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    w = torch.rand(x.shape, generator=gen)
    (gaussian_blur(a, 1.0) * w).sum().backward()
    (separable_blur(b, 1.0) * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=2e-6)
    with pytest.raises(RuntimeError):  # reflect padding needs the radius (3) below each side
        gaussian_blur(torch.rand(1, 3, 3, 3), 1.0)


# ---- pearson: torch.corrcoef against the centred-dot-product formula ------------------------
def centred_pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


@pytest.mark.parametrize("n", [2, 3, 50, 1000])
def test_pearson_matches_the_formula(n):
    gen = torch.Generator().manual_seed(n)
    for mix in (0.0, 0.3, -2.0, 1e3):
        x = torch.randn(n, generator=gen)
        y = mix * x + torch.randn(n, generator=gen)
        assert abs(pearson(x, y) - centred_pearson(x, y)) < 1e-12
    x = torch.randn(n, generator=gen)
    assert pearson(x, 3 * x + 1) == pytest.approx(1.0, abs=1e-12)
    assert pearson(x, -x) == pytest.approx(-1.0, abs=1e-12)


def test_pearson_edge_cases():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(37, generator=gen)
    for c in (0.0, 0.1, 1 / 3, 7.3):  # a constant sample: 0, either side
        const = torch.full((37,), c)
        assert pearson(const, y) == 0.0 == centred_pearson(const, y)
        assert pearson(y, const) == 0.0
    assert pearson(torch.tensor([1.5]), torch.tensor([2.0])) == 0.0  # one sample
    # EYE's columns: float32 on the CPU, one factor at a time
    target, reached = torch.rand(64, 3, generator=gen), torch.rand(64, 3, generator=gen)
    for j in range(3):
        r = pearson(target[:, j], reached[:, j])
        assert isinstance(r, float) and abs(r - centred_pearson(target[:, j], reached[:, j])) < 1e-12


# ---- linear_fit (kept): the normal equations, explicitly ------------------------------------
def normal_equations(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    xs, ys = x.double().tolist(), y.double().tolist()
    n = len(xs)
    sx, sy = sum(xs), sum(ys)
    sxx, sxy = sum(v * v for v in xs), sum(a * b for a, b in zip(xs, ys))
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    intercept = (sy - slope * sx) / n
    residual = sum((b - slope * a - intercept) ** 2 for a, b in zip(xs, ys))
    return slope, intercept, 1 - residual / sum((b - sy / n) ** 2 for b in ys)


def test_linear_fit_matches_explicit_least_squares():
    gen = torch.Generator().manual_seed(3)
    for n in (3, 11, 200):
        x = torch.linspace(-1, 1, n)
        y = 0.7 * x + 0.2 + 0.1 * torch.randn(n, generator=gen)
        assert linear_fit(x, y) == pytest.approx(normal_equations(x, y), abs=1e-10)
        small = 1e-3 * y  # small-scale y keeps its R^2 (torchmetrics' r2_score would give 1)
        assert linear_fit(x, small) == pytest.approx(normal_equations(x, small), abs=1e-10)
        assert linear_fit(x, small)[2] == pytest.approx(linear_fit(x, y)[2], abs=1e-6)
    # constant x: slope 0, intercept the mean, R^2 0; constant y: slope 0, R^2 1
    assert linear_fit(torch.full((5,), 2.0), torch.tensor([1.0, 2, 3, 4, 5])) == pytest.approx((0.0, 3.0, 0.0))
    assert linear_fit(torch.linspace(0, 1, 5), torch.full((5,), 2.0)) == pytest.approx((0.0, 2.0, 1.0))


# ---- spearman_rows (kept): ranks by counting --------------------------------------------------
def counted_spearman(row: list[float]) -> float:
    """Pearson's correlation of the ordinal ranks (ties: earlier first) with 0..A-1."""
    a = len(row)
    ranks = [sum(v < row[i] for v in row) + sum(v == row[i] for v in row[:i]) for i in range(a)]
    mean = (a - 1) / 2
    cov = sum((r - mean) * (i - mean) for i, r in enumerate(ranks))
    return cov / sum((i - mean) ** 2 for i in range(a))  # both rank vectors have this variance


@pytest.mark.parametrize("a", [2, 5, 9])
def test_spearman_rows_matches_ranked_pearson(a):
    gen = torch.Generator().manual_seed(a)
    rows = torch.randn(64, a, generator=gen, dtype=torch.float64)  # Plumerault's f: N x A, float64
    out = spearman_rows(rows)
    assert out.shape == (64,) and out.dtype == torch.float64
    ref = torch.tensor([counted_spearman(r) for r in rows.tolist()], dtype=torch.float64)
    assert (out - ref).abs().max() < 1e-12
    assert torch.allclose(spearman_rows(rows.sort(1).values), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(spearman_rows(rows.sort(1, descending=True).values), -torch.ones(64, dtype=torch.float64))


def test_spearman_rows_ties_take_ordinal_ranks():
    rows = torch.tensor([[0.0, 0, 0, 0, 0], [0, 0, 1, 1, 2], [2, 1, 1, 0, 0], [1, 0, 0, 1, 2]])
    ref = torch.tensor([counted_spearman(r) for r in rows.tolist()], dtype=torch.float64)
    assert torch.allclose(spearman_rows(rows), ref)
    assert spearman_rows(rows)[0] == 1.0  # a flat row (torchmetrics' mean ranks would give 0)
