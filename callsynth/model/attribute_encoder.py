"""The multi-level attribute encoder z_att (§0100–§0105): a U-Net whose decoder yields n feature maps
z_att^1 … z_att^n, from the coarsest (bottleneck) to the input's own resolution."""

from __future__ import annotations

import torch
from torch import nn


def _down(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


def _up(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


class AttributeEncoder(nn.Module):
    def __init__(self, in_channels: int, widths: list[int]):
        """`widths[i]`: channels after the i-th halving; len(widths) halvings give n = len + 1 levels."""
        super().__init__()
        self.downs = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.downs.append(_down(cin, w))
            cin = w
        self.ups = nn.ModuleList()
        skips = [in_channels] + widths[:-1]           # what each up-step is concatenated with
        for i in reversed(range(len(widths))):
            up_in = widths[-1] if i == len(widths) - 1 else 2 * widths[i]
            self.ups.append(_up(up_in, widths[i - 1] if i > 0 else max(8, in_channels * 2)))
        self.level_channels = [widths[-1]] + [2 * w for w in reversed(widths[:-1])] + \
            [max(8, in_channels * 2) + in_channels]
        self._skips = skips

    @property
    def levels(self) -> int:
        return len(self.level_channels)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = [image]
        x = image
        for down in self.downs:
            x = down(x)
            feats.append(x)
        levels = [x]                                   # z_att^1 at the bottleneck
        for i, up in enumerate(self.ups):
            x = torch.cat([up(x), feats[-2 - i]], dim=1)
            levels.append(x)
        return levels
