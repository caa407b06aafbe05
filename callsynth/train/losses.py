"""The patent's losses (§0126–§0153) as used for the call."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reconstruction(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_rec: frame t itself is the ground truth of G(warp(still → t), still, code_t)."""
    return F.l1_loss(output, target)


def window_mean(x: torch.Tensor, win: int) -> torch.Tensor:
    """The mean of every win×win window of (B,C,H,W) `x` that fits (avg_pool2d(x, win, stride=1)), from
    running sums in float64 along rows, then columns, about a million values at a time (their sums stay in
    the cache): the same figure to float32's precision at under half the cost (the 7×7 pool was two thirds
    of a tiny training run's time, in its full-size validation)."""
    def part(images: torch.Tensor) -> torch.Tensor:
        c = F.pad(images.double(), (0, 0, 1, 0)).cumsum(2)
        rows = c[:, :, win:] - c[:, :, :-win]
        c = F.pad(rows, (1, 0)).cumsum(3)
        return ((c[..., win:] - c[..., :-win]) / (win * win)).to(x.dtype)

    step = max(1, (1 << 20) // max(1, x[0].numel()))
    return torch.cat([part(x[i:i + step]) for i in range(0, len(x), step)])


def ssim(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """Mean SSIM per image, (B,), of images in [-1, 1], computed as the evaluator's
    skimage.structural_similarity does it on 0-255 pixels (7×7 uniform window, sample covariance,
    K1 = 0.01, K2 = 0.03, the border the window cannot reach left out, channels averaged), so that the
    loss and the judged figure are one and the same. (SSIM is not shift-invariant: [-1, 1] is mapped
    back to [0, 1] first.)"""
    a, b, data_range = (a + 1) / 2, (b + 1) / 2, 1.0
    n = win * win
    cov = n / (n - 1)
    mean = lambda x: window_mean(x, win)  # noqa: E731
    ma, mb = mean(a), mean(b)
    va = cov * (mean(a * a) - ma * ma)
    vb = cov * (mean(b * b) - mb * mb)
    vab = cov * (mean(a * b) - ma * mb)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ma * mb + c1) * (2 * vab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return s.mean(dim=(1, 2, 3))


def structure(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_ssim = 1 − SSIM(Y, frame t) on the full-size frame: a reconstruction term that rewards kept
    structure, which L1 alone trades for average pixel error."""
    return (1 - ssim(output, target)).mean()


def attribute(z_in: list[torch.Tensor], z_out: list[torch.Tensor]) -> torch.Tensor:
    """L_att = ½ Σ_k ‖z_att^k(I_att) − z_att^k(Y)‖² (mean over elements, summed over levels)."""
    return 0.5 * sum(F.mse_loss(a, b) for a, b in zip(z_in, z_out))


def identity(z_out: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
    """L_id = 1 − cos(z_id(Y), z_id(I_id))."""
    return (1 - F.cosine_similarity(z_out, z_id, dim=1)).mean()


def expression(code_out: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """L_exp: the code the frozen expression CNN reads off Y against the code that was sent."""
    return F.mse_loss(code_out, code)


def adversarial(logits: list[torch.Tensor], real: bool) -> torch.Tensor:
    """L_adv: binary cross-entropy over every patch of every scale."""
    return sum(F.binary_cross_entropy_with_logits(l, torch.full_like(l, float(real))) for l in logits) \
        / len(logits)
