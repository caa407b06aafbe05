"""A stable square face crop: fixed from the first face it sees, moved only when the head leaves it.

A crop that followed every frame would turn head motion into background motion, which neither the
pose code nor a viewer wants; so the box stays put until the face nears its edge or changes size a lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

CROP_SIZE = 256
EDGE_BLUR = 16.0     # sigma, in crop pixels, of the colour field that continues the frame past its edge


@dataclass(frozen=True)
class CropBox:
    """A square in frame pixels: centre and side."""

    cx: float
    cy: float
    side: float

    @property
    def scale(self) -> float:
        return CROP_SIZE / self.side

    def matrix(self) -> np.ndarray:
        """2x3 affine from frame pixels to crop pixels."""
        s = self.scale
        return np.array([[s, 0, s * (self.side / 2 - self.cx)],
                         [0, s, s * (self.side / 2 - self.cy)]], dtype=np.float64)

    def to_crop(self, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks (x, y, z) from frame pixels to crop pixels; z scales like x."""
        out = np.asarray(landmarks, dtype=np.float64).copy()
        m = self.matrix()
        out[:, 0] = out[:, 0] * m[0, 0] + m[0, 2]
        out[:, 1] = out[:, 1] * m[1, 1] + m[1, 2]
        if out.shape[1] > 2:
            out[:, 2] *= self.scale
        return out

    def cut(self, frame: np.ndarray) -> np.ndarray:
        """The CROP_SIZE x CROP_SIZE crop. Where it runs past the frame, the frame's edge is continued as
        a soft colour field (the edge pixels, blurred wide): repeating them as they are drew tall
        smeared bars, and mirroring the frame there drew a second neck that no warp can follow."""
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        m = self.matrix()
        crop = cv2.warpAffine(frame, m, (CROP_SIZE, CROP_SIZE), flags=interp,
                              borderMode=cv2.BORDER_REPLICATE)
        h, w = frame.shape[:2]
        corners = np.array([[0, 0, 1], [w, h, 1]], dtype=np.float64) @ m.T
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        if x0 <= 0 and y0 <= 0 and x1 >= CROP_SIZE and y1 >= CROP_SIZE:
            return crop
        inside = _inside_weights(int(np.ceil(y0)), int(np.floor(y1)), int(np.ceil(x0)), int(np.floor(x1)))
        return cv2.blendLinear(crop, soft_field(crop), inside, 1.0 - inside)


@lru_cache(maxsize=8)
def _inside_weights(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Weight of the frame itself in a crop whose frame part is rows y0:y1, columns x0:x1 (softened over
    2 px); the rest is the soft field. Cached: a stable crop keeps its box for many frames."""
    inside = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 1
    return cv2.GaussianBlur(inside, (0, 0), 2.0)


def soft_field(image: np.ndarray, sigma: float = EDGE_BLUR, shrink: int = 8) -> np.ndarray:
    """`image` blurred with a Gaussian of `sigma` pixels, computed at 1/`shrink` of its size: the same
    soft field for a wide blur, at 0.3 ms instead of the 14 ms a full-size blur took on a 2-core EPYC
    (the sender cut a crop on every frame, so it cost a third of the sender's time a frame)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // shrink), max(1, h // shrink)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / shrink)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def box_for_face(landmarks: np.ndarray, zoom: float = 1.9) -> CropBox:
    """A box around the face mesh, large enough for hair, ears and neck, a little above centre."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    w, h = hi - lo
    side = zoom * max(w, h)
    cx, cy = (lo + hi) / 2
    return CropBox(float(cx), float(cy - 0.05 * h), float(side))


def full_frame_box(frame_shape) -> CropBox:
    h, w = frame_shape[:2]
    return CropBox(w / 2, h / 2, float(min(w, h)))


class StableCrop:
    """Keeps one CropBox until the face leaves its inner margin or its size drifts too far."""

    def __init__(self, zoom: float = 1.9, margin: float = 0.08, size_tolerance: float = 0.25):
        self.zoom, self.margin, self.size_tolerance = zoom, margin, size_tolerance
        self.box: CropBox | None = None
        self.moves = 0

    def update(self, landmarks: np.ndarray | None, frame_shape) -> CropBox:
        if landmarks is None:
            if self.box is None:
                return full_frame_box(frame_shape)
            return self.box
        if self.box is None or self._left(landmarks):
            if self.box is not None:
                self.moves += 1
            self.box = box_for_face(landmarks, self.zoom)
        return self.box

    def _left(self, landmarks: np.ndarray) -> bool:
        box = self.box
        pts = box.to_crop(landmarks[:, :2])
        lo, hi = pts.min(0), pts.max(0)
        edge = self.margin * CROP_SIZE
        if lo.min() < edge or hi.max() > CROP_SIZE - edge:
            return True
        face = max(hi - lo)
        expected = CROP_SIZE / self.zoom
        return abs(face / expected - 1) > self.size_tolerance
