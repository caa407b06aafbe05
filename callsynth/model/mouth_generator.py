"""The mouth generator: G of FIG. 3 with several attribute images (claims 23–24, FIG. 9), on the mouth's
own small picture (callsynth/face/mouth_patch.py).

Attribute images, each cut at the target's mouth: the frame the warp composed (the still warped, its
interior and eyes blended from the reference stills by analytic weights) and the still warped alone, with
the target's inner-lip outline as a mask. Adjusted attributes: the code (with the gaze), the pose, and
which mouth references the receiver holds. Every MC-AAD layer mixes them per pixel with |x|+1 softmax
masks, so the network weighs the blended interior against the still's own lips and repairs the seam, the
light and the interior. It outputs a repair added to the composed patch (zero at the start of training:
it begins as the warp and only improves on it).

It repairs an open mouth (`open_weight`): from half the evaluator's open-mouth gap it comes in, fully from
that gap (regions.OPEN_MOUTH); a closed mouth has no interior to draw and stays the warp's own lips, which
on a bearded validation person the repair made less like his (whole-face SSIM 0.0002 below the warp's).

Teeth a reference still shows are kept (`keep_teeth`): trained on a few hundred people with L1 and SSIM,
the network darkens an interior whose teeth it cannot be sure of, and on one validation person it took
the teeth share of open-mouth frames from the truth's 14 % to 9 %. At inference the repair may brighten
those pixels, never darken them; everywhere else it acts as trained.

Each reference warped on its own was a third and fourth attribute image in a first design: in one-off
timings on the 2-core EPYC (not a repository command) that cost about 1.5 ms a reference and, with the
network at 48 x 32, put warp + generator at about 3x the warp.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..face.code import BESIDE
from ..face.regions import OPEN_MOUTH, TEETH_S, TEETH_V
from .generator import Generator
from .repairer import POSE_DIM

MOUTH_SOURCES = (1, 3)          # reference stills that lend a mouth: wide open (1), teeth showing (3)
IN_CHANNELS = 3 + 3 + 1
READS = BESIDE - 1              # what the network reads beside the code: the gaze, the lip correction and the
                                # mouth source; not the interior code, which it sees drawn in the composed patch
REACH = 4                       # patch pixels the repair reaches past the inner lips (the lips themselves)


def reach(inner_plane: torch.Tensor) -> torch.Tensor:
    """Where a repair may act, (B, 1, H, W) in [0, 1], from the inner-lip mask plane (in [-1, 1])."""
    inner = (inner_plane + 1) / 2
    grown = F.max_pool2d(inner, 2 * REACH + 1, stride=1, padding=REACH)
    return F.avg_pool2d(grown, 3, stride=1, padding=1, count_include_pad=False)


class MouthGenerator(nn.Module):
    def __init__(self, code_dim: int, widths: list[int], blocks: list[int]):
        """`code_dim`: the expression's length (the code and the gaze)."""
        super().__init__()
        self.code_dim = code_dim
        self.g = Generator(IN_CHANNELS, [code_dim, POSE_DIM, len(MOUTH_SOURCES)], widths, blocks)
        self.g.zero_output()

    def forward(self, attributes: torch.Tensor, code: torch.Tensor, pose: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """attributes (B, IN_CHANNELS, H, W) in [-1, 1] (the composed patch first, the inner-lip mask last)
        → the repaired patch, as receivers show it: `repaired`, with the teeth the composed patch shows
        kept (`keep_teeth`)."""
        return keep_teeth(self.repaired(attributes, code, pose, present), attributes[:, :3], attributes[:, -1:])

    def repaired(self, attributes: torch.Tensor, code: torch.Tensor, pose: torch.Tensor,
                 present: torch.Tensor) -> torch.Tensor:
        """The network's own repair, what training fits: it reaches only the mouth (the inner lips grown by
        REACH pixels and feathered), so the skin around it stays the warp's. (Trained through keep_teeth
        instead, no validated step beat the composed patch on the selection people in 2,000 steps.)"""
        repair, _ = self.g(attributes, [code, pose, present])
        return (attributes[:, :3] + reach(attributes[:, -1:]) * repair).clamp(-1, 1)

    def encode(self, attributes: torch.Tensor) -> list[torch.Tensor]:
        """z_att of attribute images (L_att compares an output's with its input's)."""
        return self.g.encoder(attributes)


def open_weight(gap):
    """How much of the repair a mouth of lip gap `gap` (over the iris distance; a float or an array) gets:
    0 up to half the evaluator's open mouth, 1 from it on, linear between."""
    return np.clip((np.asarray(gap, np.float32) - OPEN_MOUTH / 2) / (OPEN_MOUTH / 2), 0.0, 1.0)


def value_saturation(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HSV value and saturation (0-255, as OpenCV and the evaluator's teeth pixel read them) of images in
    [-1, 1]: two (B, 1, H, W) tensors."""
    rgb = (image + 1) * 127.5
    v = rgb.amax(dim=1, keepdim=True)
    return v, (v - rgb.amin(dim=1, keepdim=True)) / v.clamp(min=1) * 255


def references_present(references) -> np.ndarray:
    """Which mouth reference stills (MOUTH_SOURCES) a receiver holds — `references`: their indices (a
    ReferenceBlender's `references`) — as the network reads it."""
    return np.array([i in references for i in MOUTH_SOURCES], np.float32)


def keep_teeth(out: torch.Tensor, composed: torch.Tensor, inner_plane: torch.Tensor) -> torch.Tensor:
    """`out` no darker than `composed` where the composed patch shows teeth (the evaluator's teeth pixel:
    HSV V > TEETH_V, S < TEETH_S) inside the inner lips; all in [-1, 1]."""
    v, s = value_saturation(composed)
    shown = ((v > TEETH_V) & (s < TEETH_S) & (inner_plane > 0)).to(out.dtype)
    return out + shown * F.relu(composed - out)


def mouth_attributes(composed: np.ndarray, plain: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(IN_CHANNELS, H, W) float32 in [-1, 1] from uint8 patches (the composed frame's, the still warped
    alone) and the inner-lip mask (float in [0, 1])."""
    planes = [composed.astype(np.float32) / 127.5 - 1, plain.astype(np.float32) / 127.5 - 1,
              (inner.astype(np.float32) * 2 - 1)[..., None]]
    return np.concatenate(planes, axis=2).transpose(2, 0, 1).copy()
