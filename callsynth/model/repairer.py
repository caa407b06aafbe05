"""The call's generator: G of FIG. 3 fed the warped still (plus a landmark map) as the attribute image and
the still's identity, the sent code and pose as adjusted attributes. It outputs a repair that is added to
the warped still, so that what the warp already gets right costs the network nothing to keep."""

from __future__ import annotations

import torch
from torch import nn

from .generator import Generator

ID_DIM = 128
POSE_DIM = 6


class CallGenerator(nn.Module):
    def __init__(self, code_dim: int, widths: list[int], blocks: list[int]):
        super().__init__()
        self.code_dim = code_dim
        self.g = Generator(4, [ID_DIM, code_dim, POSE_DIM], widths, blocks)
        # Start as the identity: a zero repair, so training begins at the warp and only improves on it.
        last = self.g.blocks[-1]
        for conv in (last.conv2, last.bypass):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, warp: torch.Tensor, lmap: torch.Tensor, z_id: torch.Tensor, code: torch.Tensor,
                pose: torch.Tensor, z_att=None):
        """warp (B,3,H,W) and lmap (B,1,H,W) in [-1, 1] → (image in [-1, 1], z_att levels)."""
        repair, z_att = self.g(torch.cat([warp, lmap], 1), [z_id, code, pose], z_att)
        return (warp + repair).clamp(-1, 1), z_att

    def attributes(self, image: torch.Tensor, lmap: torch.Tensor) -> list[torch.Tensor]:
        """z_att of an image (for L_att, comparing an output's attributes with its input's)."""
        return self.g.encoder(torch.cat([image, lmap], 1))
