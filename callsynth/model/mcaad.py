"""The multi-channel adaptive attentional denormalization (MC-AAD) layer, FIG. 4, §0110–§0120.

    h̄      = (h − μ) / σ                       μ, σ per channel over H×W (§0110)
    A      = γ_att ⊙ h̄ + β_att                 γ_att, β_att: convolutions of z_att^k (§0111)
    E_xi   = γ_xi ⊙ h̄ + β_xi                   γ_xi, β_xi: fully connected from z_xi (§0115–§0116)
    |x| = 1:  M = σ(conv(h̄)),   h_out = M ⊙ A + (1 − M) ⊙ E_x1            (§0118, §0120)
    |x| ≥ 2:  M = softmax(conv(h̄)) over |x|+1 masks,
              h_out = M_0 ⊙ A + Σ_i M_i ⊙ E_xi                              (§0117, §0120)
"""

from __future__ import annotations

import torch
from torch import nn


class MCAADLayer(nn.Module):
    def __init__(self, channels: int, att_channels: int, attribute_dims: list[int] | tuple[int, ...],
                 eps: float = 1e-5):
        """`attribute_dims`: the length of each adjusted attribute's vector z_xi (id, exp, pose, ...)."""
        super().__init__()
        if not attribute_dims:
            raise ValueError("MC-AAD needs at least one adjusted attribute")
        self.channels, self.eps = channels, eps
        self.gamma_att = nn.Conv2d(att_channels, channels, 3, padding=1)
        self.beta_att = nn.Conv2d(att_channels, channels, 3, padding=1)
        self.gamma_x = nn.ModuleList(nn.Linear(d, channels) for d in attribute_dims)
        self.beta_x = nn.ModuleList(nn.Linear(d, channels) for d in attribute_dims)
        n = len(attribute_dims)
        self.masks = nn.Conv2d(channels, 1 if n == 1 else n + 1, 3, padding=1)
        self.fused_att: nn.Conv2d | None = None      # set by fuse() for inference
        self.fused_x: nn.Linear | None = None

    @property
    def n_attributes(self) -> int:
        return len(self.gamma_x)

    def normalise(self, h: torch.Tensor) -> torch.Tensor:
        mu = h.mean(dim=(2, 3), keepdim=True)
        sigma = (h.var(dim=(2, 3), keepdim=True, unbiased=False) + self.eps).sqrt()
        return (h - mu) / sigma

    def attention(self, h_bar: torch.Tensor) -> torch.Tensor:
        """(B, |x|+1, H, W) masks: [M, 1 − M] when |x| = 1, a softmax over the channels otherwise."""
        logits = self.masks(h_bar)
        if self.n_attributes == 1:
            m = torch.sigmoid(logits)
            return torch.cat([m, 1 - m], dim=1)
        return torch.softmax(logits, dim=1)

    def fuse(self) -> MCAADLayer:
        """For inference: γ_att and β_att as one convolution, and every γ_xi, β_xi as one linear map of
        the concatenated z_x (block-diagonal): the same arithmetic in 2 operations instead of 2 + 2|x|,
        which on a CPU is most of a small layer's cost. Training keeps the separate ones."""
        c = self.channels
        att = nn.Conv2d(self.gamma_att.in_channels, 2 * c, 3, padding=1)
        att.weight.data = torch.cat([self.gamma_att.weight.data, self.beta_att.weight.data])
        att.bias.data = torch.cat([self.gamma_att.bias.data, self.beta_att.bias.data])
        dims = [g.in_features for g in self.gamma_x]
        lin = nn.Linear(sum(dims), 2 * c * len(dims))
        lin.weight.data.zero_()
        start = 0
        for i, (g, b, d) in enumerate(zip(self.gamma_x, self.beta_x, dims)):
            lin.weight.data[2 * c * i:2 * c * i + c, start:start + d] = g.weight.data
            lin.weight.data[2 * c * i + c:2 * c * (i + 1), start:start + d] = b.weight.data
            lin.bias.data[2 * c * i:2 * c * (i + 1)] = torch.cat([g.bias.data, b.bias.data])
            start += d
        self.fused_att, self.fused_x = att, lin
        return self

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_x: list[torch.Tensor]) -> torch.Tensor:
        if len(z_x) != self.n_attributes:
            raise ValueError(f"{len(z_x)} attribute vectors given, layer built for {self.n_attributes}")
        h_bar = self.normalise(h)
        masks = self.attention(h_bar)
        if self.fused_att is not None:
            c = self.channels
            gamma, beta = self.fused_att(z_att).split(c, dim=1)
            out = masks[:, :1] * (gamma * h_bar + beta)
            gb = self.fused_x(torch.cat(z_x, dim=1))[:, :, None, None]
            for i in range(self.n_attributes):
                out = out + masks[:, i + 1:i + 2] * (gb[:, 2 * c * i:2 * c * i + c] * h_bar
                                                     + gb[:, 2 * c * i + c:2 * c * (i + 1)])
            return out
        branches = [self.gamma_att(z_att) * h_bar + self.beta_att(z_att)]
        for gamma, beta, z in zip(self.gamma_x, self.beta_x, z_x):
            branches.append(gamma(z)[:, :, None, None] * h_bar + beta(z)[:, :, None, None])
        return sum(masks[:, i:i + 1] * branch for i, branch in enumerate(branches))
