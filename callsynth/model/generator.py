"""The generator G (FIG. 3): n MC-AAD residual blocks, one per level of z_att, each fed the upsampled
output of the block before and every adjusted attribute vector z_x; the first block starts from a tensor
made from the attribute vectors by a transposed convolution (§0106–§0109)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attribute_encoder import AttributeEncoder
from .blocks import MCAADResBlock


class Generator(nn.Module):
    def __init__(self, attribute_image_channels: int, attribute_dims: list[int], widths: list[int],
                 block_channels: list[int]):
        """`widths`: attribute-encoder channels per halving; `block_channels`: the n blocks' outputs
        (coarse to fine), the last one 3 for RGB."""
        super().__init__()
        self.encoder = AttributeEncoder(attribute_image_channels, widths)
        if len(block_channels) != self.encoder.levels:
            raise ValueError(f"{len(block_channels)} blocks for {self.encoder.levels} attribute levels")
        self.attribute_dims = list(attribute_dims)
        self.start = nn.ConvTranspose2d(sum(attribute_dims), block_channels[0], 2)
        self.blocks = nn.ModuleList()
        cin = block_channels[0]
        for k, (cout, catt) in enumerate(zip(block_channels, self.encoder.level_channels)):
            self.blocks.append(MCAADResBlock(cin, cout, catt, attribute_dims))
            cin = cout

    def zero_output(self) -> None:
        """Make G output zeros (its last block's output and bypass convolutions at zero): a generator whose
        output is a repair then starts as the identity, and training only improves on what it repairs."""
        last = self.blocks[-1]
        for conv in (last.conv2, last.bypass):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, attribute_image: torch.Tensor, z_x: list[torch.Tensor],
                z_att: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(image in [-1, 1], the z_att levels used)."""
        z_att = self.encoder(attribute_image) if z_att is None else z_att
        h = self.start(torch.cat(z_x, dim=1)[:, :, None, None])
        for k, block in enumerate(self.blocks):
            h = F.interpolate(h, size=z_att[k].shape[-2:], mode="bilinear", align_corners=False)
            h = block(h, z_att[k], z_x)
        return torch.tanh(h), z_att


class Discriminator(nn.Module):
    """Multi-scale PatchGAN: the same small net on the image and on its half and quarter sizes."""

    def __init__(self, in_channels: int = 3, width: int = 32, scales: int = 2):
        super().__init__()
        self.nets = nn.ModuleList(self._net(in_channels, width) for _ in range(scales))

    @staticmethod
    def _net(cin, w):
        return nn.Sequential(
            nn.Conv2d(cin, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.InstanceNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Real/fake logits per patch, one map per scale."""
        out = []
        for i, net in enumerate(self.nets):
            out.append(net(image if i == 0 else F.avg_pool2d(image, 2 ** i)))
        return out
