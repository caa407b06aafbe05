"""Rendering with reference stills: the mouth interior and the eyes come from the picture that shows them.

A warp cannot draw what its still lacks: a lid over an open eye, teeth behind closed lips. The sender
therefore sends a few reference stills as they happen (mouth open with teeth, eyes closed; see
sender/reference_pick.py). Here each reference is warped to the target landmarks like the still, and
blended in where it matches the target better, with analytic weights:

- mouth: inside the target's inner-lip outline (grown a pixel and feathered, so the seam falls on the
  lip line), from the reference whose lip gap is nearest the target's, fully once the mouth is open;
- eyes: around each eye, from the reference with the eye most closed, weighted by how far the target's
  eye has closed from the still's toward that reference's.

Before any reference has arrived the lids are painted over the eye (inpainted from the skin around it)
and an open mouth is darkened, so a blink and a dark mouth still show. The generator learns these
weights later; this is the part that works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .regions import EYE_OUTLINES, INNER_LIPS, eye_openness, lip_gap, polygon_mask, teeth_share
from .still import Still
from .warp import FaceWarper

MOUTH_OPEN = 0.08        # lip gap over iris distance where the evaluator calls a mouth open
MOUTH_FULL = 0.16        # from here the interior is the reference's alone
CLOSED_SHARE = 0.6       # an eye below this share of the still's openness is blinking


@dataclass
class Reference:
    index: int
    still: Still
    warper: FaceWarper
    gap: float
    openness: np.ndarray
    teeth: float


def _box(points: np.ndarray, margin: float, size: int) -> tuple[int, int, int, int]:
    lo, hi = points[:, :2].min(0) - margin, points[:, :2].max(0) + margin
    x0, y0 = (int(max(0, np.floor(v))) for v in lo)
    x1, y1 = (int(min(size, np.ceil(v) + 1)) for v in hi)
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


def _match_colour(patch: np.ndarray, base: np.ndarray, inner: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Shift the patch's colour so that it agrees with the base on the ring around the blended region
    (a reference taken under other light would otherwise show its seam)."""
    if ring.sum() < 10:
        return patch
    offset = base[ring].astype(np.float32).mean(0) - patch[ring].astype(np.float32).mean(0)
    return np.clip(patch.astype(np.float32) + offset, 0, 255)


class ReferenceBlender:
    """The receiver's reference stills and the blend of them into a warped frame."""

    def __init__(self, still: Still):
        self.still = still
        self.still_open = eye_openness(still.landmarks)
        self.still_gap = lip_gap(still.landmarks)
        self.references: dict[int, Reference] = {}

    def add(self, index: int, still: Still) -> Reference:
        """Cache (or replace) reference `index`."""
        ref = Reference(index, still, FaceWarper(still.image, still.landmarks), lip_gap(still.landmarks),
                        eye_openness(still.landmarks), teeth_share(still.image, still.landmarks))
        self.references[index] = ref
        return ref

    def compose(self, base: np.ndarray, target: np.ndarray) -> np.ndarray:
        """`base`: the still warped to `target` (crop-pixel landmarks), a frame of its own: the mouth
        and eyes are blended into it in place, and it is returned."""
        for eye in range(2):
            self._eye(base, target, eye)
        self._mouth(base, target)
        return base

    # --- mouth ----------------------------------------------------------------------------------------

    def _mouth(self, out: np.ndarray, target: np.ndarray) -> None:
        gap = lip_gap(target)
        if gap < MOUTH_OPEN * 0.6:
            return
        weight = float(np.clip((gap - MOUTH_OPEN * 0.6) / (MOUTH_FULL - MOUTH_OPEN * 0.6), 0, 1))
        lips = target[INNER_LIPS]
        width = float(np.ptp(lips[:, 0]))
        x0, y0, x1, y1 = box = _box(lips, 0.25 * width + 4, out.shape[0])
        local = lips[:, :2] - (x0, y0)
        inner = polygon_mask((y1 - y0, x1 - x0), local, grow=1.0, feather=1.0)
        candidates = [r for r in self.references.values() if r.gap >= max(MOUTH_OPEN, self.still_gap + 0.04)]
        region = out[y0:y1, x0:x1].astype(np.float32)
        if candidates:
            ref = min(candidates, key=lambda r: abs(np.log(r.gap / max(gap, 1e-3))) - 0.5 * r.teeth)
            patch = ref.warper.warp(target, box)
            ring = (polygon_mask(inner.shape, local, grow=4.0) > 0.5) & (inner < 0.02)
            patch = _match_colour(patch, region, inner > 0.5, ring)
        else:
            patch = region * 0.45          # no reference yet: a dark mouth, not a stretched lip
        alpha = (weight * inner)[..., None]
        out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)

    # --- eyes -----------------------------------------------------------------------------------------

    def _eye(self, out: np.ndarray, target: np.ndarray, eye: int) -> None:
        opened = float(eye_openness(target)[eye])
        still_open = float(self.still_open[eye])
        if opened >= 0.85 * still_open:
            return
        outline = target[EYE_OUTLINES[eye]]
        width = float(np.ptp(outline[:, 0]))
        x0, y0, x1, y1 = box = _box(outline, 0.45 * width + 3, out.shape[0])
        local = outline[:, :2] - (x0, y0)
        region = out[y0:y1, x0:x1].astype(np.float32)
        area = polygon_mask(region.shape, local, grow=0.3 * width, feather=0.12 * width)
        closed = [r for r in self.references.values() if r.openness[eye] < CLOSED_SHARE * still_open]
        if closed:
            ref = min(closed, key=lambda r: r.openness[eye])
            weight = float(np.clip((still_open - opened) / max(still_open - ref.openness[eye], 1e-3), 0, 1))
            patch = ref.warper.warp(target, box)
            ring = (polygon_mask(region.shape, local, grow=0.45 * width) > 0.5) & (area < 0.02)
            patch = _match_colour(patch, region, area > 0.5, ring)
        else:
            # No closed-eye picture yet: paint the lids over the opening from the skin around it.
            weight = float(np.clip(1 - opened / (CLOSED_SHARE * still_open), 0, 1))
            hole = (polygon_mask(region.shape, local, grow=1.5) > 0.1).astype(np.uint8)
            patch = cv2.inpaint(np.ascontiguousarray(out[y0:y1, x0:x1]), hole, 3, cv2.INPAINT_TELEA)
            patch = patch.astype(np.float32)
        if weight <= 0:
            return
        alpha = (weight * area)[..., None]
        out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
