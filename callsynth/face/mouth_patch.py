"""The mouth's own small picture: where the mouth generator looks and what it repairs.

A caller looks at the mouth, and the mouth is where the warp fails most (an interior its still may not
show, teeth from a reference taken at another opening); so the generator spends its compute there, on a
PATCH_W x PATCH_H picture of the mouth in its own frame: centred on the inner lips, x along the mouth
corners, SPAN_W x SPAN_H iris distances of face across. Cut from the target landmarks alone, so the
sender's truth and the receiver's sources are cut the same way for training, and the receiver needs
nothing the wire does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .regions import INNER_LIPS, iris_distance, polygon_mask

PATCH_W, PATCH_H = 40, 24      # pixels of the patch (the generator's input and output)
SPAN_W, SPAN_H = 1.5, 0.9      # iris distances of face the patch covers, along and across the mouth
CORNERS = (61, 291)            # outer mouth corners: steadier than the inner ones on an open mouth
FEATHER = 3.0                  # patch pixels over which a repair fades out toward the patch's edge


@dataclass(frozen=True)
class MouthPatch:
    affine: np.ndarray                   # 2x3, crop pixels -> patch pixels
    box: tuple[int, int, int, int]       # (x0, y0, x1, y1) of the crop that the patch covers

    @classmethod
    def at(cls, landmarks: np.ndarray, size: int) -> MouthPatch:
        """The patch for a face's landmarks (crop pixels) in a size x size crop."""
        lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
        left, right = lm[CORNERS[0]], lm[CORNERS[1]]
        axis = right - left
        length = float(np.linalg.norm(axis))
        u = axis / length if length >= 1.0 else np.array([1.0, 0.0])   # corners on one pixel: level
        v = np.array([-u[1], u[0]])
        centre = lm[INNER_LIPS].mean(0)
        span = max(iris_distance(lm), 4.0)
        kx, ky = PATCH_W / (SPAN_W * span), PATCH_H / (SPAN_H * span)
        linear = np.array([u * kx, v * ky])
        affine = np.hstack([linear, (np.array([PATCH_W / 2, PATCH_H / 2]) - linear @ centre)[:, None]])
        corners = np.array([[0, 0], [PATCH_W, 0], [0, PATCH_H], [PATCH_W, PATCH_H]], np.float64)
        back = (corners - affine[:, 2]) @ np.linalg.inv(linear).T
        x0, y0 = np.clip(np.floor(back.min(0)).astype(int) - 1, 0, size - 1)
        x1, y1 = np.clip(np.ceil(back.max(0)).astype(int) + 2, x0 + 1, size)
        return cls(affine, (int(x0), int(y0), int(x1), int(y1)))

    def _box_affine(self) -> np.ndarray:
        x0, y0 = self.box[:2]
        a = self.affine.copy()
        a[:, 2] += a[:, :2] @ np.array([x0, y0], np.float64)
        return a

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The patch of a full crop (H x W x C)."""
        x0, y0, x1, y1 = self.box
        return self.cut_box(image[y0:y1, x0:x1])

    def cut_box(self, part: np.ndarray) -> np.ndarray:
        """The patch of the crop's part inside `box` (what FaceWarper.warp(target, box) draws)."""
        return cv2.warpAffine(np.ascontiguousarray(part), self._box_affine(), (PATCH_W, PATCH_H),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def mask(self, landmarks: np.ndarray, indices=INNER_LIPS) -> np.ndarray:
        """A (PATCH_H, PATCH_W) float mask of the polygon of `indices` (the inner lips) in the patch."""
        pts = np.asarray(landmarks, dtype=np.float64)[indices, :2] @ self.affine[:, :2].T + self.affine[:, 2]
        return polygon_mask((PATCH_H, PATCH_W), pts)

    def add(self, image: np.ndarray, repair: np.ndarray) -> None:
        """Add a patch-sized repair (float, image units) to the crop in place, faded out toward the
        patch's edge so that no seam shows."""
        x0, y0, x1, y1 = self.box
        window = window_weights()[..., None]
        back = cv2.warpAffine((repair * window).astype(np.float32), self._box_affine(), (x1 - x0, y1 - y0),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
        part = image[y0:y1, x0:x1]
        part[:] = np.clip(part.astype(np.float32) + back.reshape(part.shape) + 0.5, 0, 255).astype(np.uint8)


def window_weights() -> np.ndarray:
    """(PATCH_H, PATCH_W) weights: 1 inside, falling to 0 over FEATHER pixels at the patch's edge."""
    ys = np.minimum(np.arange(PATCH_H), np.arange(PATCH_H)[::-1]) + 0.5
    xs = np.minimum(np.arange(PATCH_W), np.arange(PATCH_W)[::-1]) + 0.5
    return (np.clip(ys[:, None] / FEATHER, 0, 1) * np.clip(xs[None, :] / FEATHER, 0, 1)).astype(np.float32)
