"""dlib's 150×150 face chip, found from MediaPipe landmarks, as a differentiable resampling of a crop.

The template is where dlib's own chips (5-point shape predictor, padding 0.25) put these MediaPipe points:
measured on 20 studio portraits of ../shared/data (spread under 0.8 px for the eyes, 1.8 px the nose)."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..face.pose import umeyama
from .identity import CHIP_SIZE

CHIP_POINTS = [33, 133, 362, 263, 1]      # eye corners (outer, inner, inner, outer) and the nose tip
CHIP_TEMPLATE = np.array([[36.30, 45.96], [59.51, 47.62], [88.35, 47.44], [111.89, 45.64], [73.95, 80.44]])


def chip_theta(landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """(2, 3) affine_grid matrix that samples the chip out of an image_size² crop with these landmarks."""
    s, r, t = umeyama(CHIP_TEMPLATE, np.asarray(landmarks)[CHIP_POINTS, :2])   # chip px → crop px
    m = np.hstack([s * r, t[:, None]])
    # affine_grid works in [-1, 1] coordinates (align_corners=False) on both sides.
    to_chip_px = np.array([[CHIP_SIZE / 2, 0, CHIP_SIZE / 2 - 0.5], [0, CHIP_SIZE / 2, CHIP_SIZE / 2 - 0.5],
                           [0, 0, 1]])
    from_crop_px = np.array([[2 / image_size, 0, 1 / image_size - 1], [0, 2 / image_size, 1 / image_size - 1],
                             [0, 0, 1]])
    full = from_crop_px @ np.vstack([m, [0, 0, 1]]) @ to_chip_px
    return full[:2].astype(np.float32)


def cut_chips(images: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) → chips in 0–255 (B, 3, 150, 150), differentiably."""
    grid = F.affine_grid(thetas, (images.shape[0], 3, CHIP_SIZE, CHIP_SIZE), align_corners=False)
    return (F.grid_sample(images, grid, align_corners=False, padding_mode="border") + 1) * 127.5
