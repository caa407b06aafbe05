"""The call's generator: G of FIG. 3 fed the warped still (plus a landmark map) as the attribute image and
the still's identity, the sent code and pose as adjusted attributes. It outputs a repair that is added to
the warped still, so that what the warp already gets right costs the network nothing to keep.

G works at `size`² (128² by default) for speed; `render` takes the full-size warp (256², the call's
crop), runs G on its area-downsampled copy and adds the bilinearly upsampled repair to the full warp, so
the fine detail the warp keeps is not lost. Training and the receiver both go through `render`, so the
loss is taken on exactly the frames a caller sees.

`gain` scales the repair at render time. Training learns the repair at gain 1 on its own identities; on
faces it never saw, the full repair overshoots (validation SSIM peaks and landmark error is lowest below
1), so `callsynth train` picks the gain on the validation identities and ships it with the weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .generator import Generator

ID_DIM = 128
POSE_DIM = 6


class CallGenerator(nn.Module):
    def __init__(self, code_dim: int, widths: list[int], blocks: list[int], size: int = 128,
                 gain: float = 1.0):
        super().__init__()
        self.code_dim, self.size, self.gain = code_dim, size, float(gain)
        self.g = Generator(4, [ID_DIM, code_dim, POSE_DIM], widths, blocks)
        self.g.zero_output()     # a zero repair: training begins at the warp and only improves on it

    def forward(self, warp: torch.Tensor, lmap: torch.Tensor, z_id: torch.Tensor, code: torch.Tensor,
                pose: torch.Tensor, z_att=None):
        """warp (B,3,size,size) and lmap (B,1,size,size) in [-1, 1] → (image in [-1, 1], z_att levels)."""
        repair, z_att = self.g(torch.cat([warp, lmap], 1), [z_id, code, pose], z_att)
        return (warp + repair).clamp(-1, 1), z_att

    def render(self, warp_full: torch.Tensor, lmap: torch.Tensor, z_id: torch.Tensor, code: torch.Tensor,
               pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """warp_full (B,3,H,W) in [-1, 1], lmap at size² → (full-size frame, size² frame, z_att levels)."""
        repair_full, small, z_att = self.repair(warp_full, lmap, z_id, code, pose)
        return self.compose(warp_full, repair_full, self.gain), small, z_att

    def repair(self, warp_full: torch.Tensor, lmap: torch.Tensor, z_id: torch.Tensor, code: torch.Tensor,
               pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The repair upsampled to warp_full's size (before the gain), the size² frame, z_att levels."""
        warp = F.interpolate(warp_full, size=(self.size, self.size), mode="area")
        repair, z_att = self.g(torch.cat([warp, lmap], 1), [z_id, code, pose])
        repair_full = F.interpolate(repair, size=warp_full.shape[-2:], mode="bilinear", align_corners=False)
        return repair_full, (warp + repair).clamp(-1, 1), z_att

    @staticmethod
    def compose(warp_full: torch.Tensor, repair_full: torch.Tensor, gain: float) -> torch.Tensor:
        """The frame a caller sees: the warp plus the repair at `gain`."""
        return (warp_full + gain * repair_full).clamp(-1, 1)

    def attributes(self, image: torch.Tensor, lmap: torch.Tensor) -> list[torch.Tensor]:
        """z_att of an image (for L_att, comparing an output's attributes with its input's)."""
        return self.g.encoder(torch.cat([image, lmap], 1))


class FullFrame(nn.Module):
    """`CallGenerator.render` returning the full-size frame alone: what the receiver traces and runs."""

    def __init__(self, net: CallGenerator):
        super().__init__()
        self.net = net

    def forward(self, warp_full, lmap, z_id, code, pose):
        return self.net.render(warp_full, lmap, z_id, code, pose)[0]
