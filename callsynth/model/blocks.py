"""The MC-AAD residual block (FIG. 3): two (MC-AAD → ReLU → 3×3 conv) stages, and on the bypass a third
when the channel count changes."""

from __future__ import annotations

import torch
from torch import nn

from .mcaad import MCAADLayer


class MCAADResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, att_channels: int, attribute_dims):
        super().__init__()
        self.aad1 = MCAADLayer(in_channels, att_channels, attribute_dims)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.aad2 = MCAADLayer(in_channels, att_channels, attribute_dims)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bypass = None
        if in_channels != out_channels:
            self.aad_bypass = MCAADLayer(in_channels, att_channels, attribute_dims)
            self.bypass = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_x: list[torch.Tensor]) -> torch.Tensor:
        out = self.conv1(torch.relu(self.aad1(h, z_att, z_x)))
        out = self.conv2(torch.relu(self.aad2(out, z_att, z_x)))
        skip = h if self.bypass is None else self.bypass(torch.relu(self.aad_bypass(h, z_att, z_x)))
        return out + skip
