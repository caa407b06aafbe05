"""The patent's losses (§0126–§0153) as used for the call."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reconstruction(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_rec: frame t itself is the ground truth of G(warp(still → t), still, code_t)."""
    return F.l1_loss(output, target)


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
