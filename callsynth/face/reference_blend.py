"""Rendering with reference stills: the mouth interior and the eyes come from the picture that shows them.

A warp cannot draw what its still lacks: a lid over an open eye, teeth behind closed lips. The sender
therefore sends a few reference stills as they happen (mouth open with teeth, eyes closed; see
sender/reference_pick.py). Here each reference is warped to the target landmarks like the still, and
blended in where it matches the target better, with analytic weights:

- mouth: inside the target's inner-lip outline (grown a pixel and feathered, so the seam falls on the
  lip line), from the source (a reference or the still) whose lip gap is nearest the target's, visible
  teeth counting in its favour, fully once the mouth is open;
- eyes: around each eye, from the reference with the eye most closed, coming in as the target's eye
  closes below EYE_START of the still's openness and fully from CLOSED_SHARE down.

Before a closed-eye reference has arrived, the blender uses one it makes from the still itself: each eye
opening covered by the upper lid's skin folded down over it, the upper lid's landmarks moved onto the
lower lid (`closed_eyes`). Before an open-mouth reference, an open mouth is darkened. So a blink and a
dark mouth show from the first frame. The generator learns these weights later; this is the part that
works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .regions import EYE_OUTLINES, INNER_LIPS, OPEN_MOUTH, eye_openness, lip_gap, polygon_mask, teeth_share
from .still import Still
from .warp import FaceWarper

SYNTHETIC = -1           # index of the closed-eye picture made from the still

MOUTH_FULL = 0.16        # from here the interior is the reference's alone
CLOSED_SHARE = 0.6       # an eye below this share of the still's openness is blinking
DARK_MOUTH = 0.12        # with no open-mouth picture, a mouth open this far is drawn darker
TEETH_WEIGHT = 1.5       # how much a source's visible teeth count against a lip gap unlike the target's
EYE_START = 0.8          # the closed-eye texture starts to come in below this share


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


def _lid_curves(landmarks: np.ndarray, outline: np.ndarray):
    """(upper, lower) lid outline points of one eye, each sorted left to right."""
    pts = landmarks[outline, :2]
    corner_a, corner_b = 0, 8                       # the outlines start at one corner, index 8 the other
    first, second = pts[corner_a:corner_b + 1], np.vstack([pts[corner_b:], pts[:1]])
    upper, lower = (first, second) if first[:, 1].mean() < second[:, 1].mean() else (second, first)
    return upper[np.argsort(upper[:, 0])], lower[np.argsort(lower[:, 0])]


def closed_eyes(still: Still) -> Still:
    """The still with both eyes shut: each opening and its lashes covered by lid skin (the colour of the
    skin just below the eye, a little shaded toward the lid line), a soft lash line where the lids meet,
    and the upper lid's landmarks laid on the lower lid."""
    image = still.image.copy()
    landmarks = np.array(still.landmarks, dtype=np.float64, copy=True)
    for outline in EYE_OUTLINES:
        upper, lower = _lid_curves(landmarks, outline)
        width = float(np.ptp(landmarks[outline, 0]))
        x0, y0, x1, y1 = _box(landmarks[outline], 0.4 * width, image.shape[0])
        region = image[y0:y1, x0:x1]
        local = landmarks[outline, :2] - (x0, y0)
        cover = polygon_mask(region.shape, local, grow=max(2.0, 0.08 * width), feather=0.05 * width)
        below = polygon_mask(region.shape, local + (0, 0.12 * width), grow=0.1 * width) > 0.5
        skin_band = below & (polygon_mask(region.shape, local, grow=0.05 * width) < 0.5)
        skin = np.median(region[skin_band], axis=0) if skin_band.sum() > 10 else region.reshape(-1, 3).mean(0)
        # lid shading: a little darker toward the lid line
        ys = np.arange(region.shape[0], dtype=np.float32)[:, None]
        lid_y = np.interp(np.arange(region.shape[1]), lower[:, 0] - x0, lower[:, 1] - y0)[None, :]
        shade = 1.0 - 0.12 * np.clip(1 - np.abs(ys - lid_y) / (0.15 * width), 0, 1)
        lid = np.clip(skin[None, None, :] * shade[..., None], 0, 255)
        mixed = region * (1 - cover[..., None]) + lid * cover[..., None]
        lash = np.zeros(region.shape[:2], np.float32)
        line = np.round(np.stack([lower[:, 0] - x0, lower[:, 1] - y0], 1) * 16).astype(np.int32)
        cv2.polylines(lash, [line], False, 1.0, 1, cv2.LINE_AA, 4)
        lash = cv2.GaussianBlur(lash, (0, 0), 0.6)[..., None] * 0.7
        region[:] = np.clip(mixed * (1 - lash) + np.array([45, 35, 35]) * lash + 0.5, 0, 255).astype(np.uint8)
        for index in outline:
            x, y = landmarks[index, :2]
            if y < np.interp(x, lower[:, 0], lower[:, 1]) - 0.5:
                landmarks[index, 1] = np.interp(x, lower[:, 0], lower[:, 1])
    return Still(image, landmarks)


def eye_region(landmarks: np.ndarray, eye: int, size: int):
    """Where a picture of size² at `landmarks` has eye `eye`, as the blend redraws a closing one: (box,
    the eye's outline in the box, its feathered mask in the box)."""
    outline = landmarks[EYE_OUTLINES[eye]]
    width = float(np.ptp(outline[:, 0]))
    x0, y0, x1, y1 = box = _box(outline, 0.45 * width + 3, size)
    local = outline[:, :2] - (x0, y0)
    return box, local, polygon_mask((y1 - y0, x1 - x0), local, grow=0.3 * width, feather=0.12 * width)


def eyes_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) in [0, 1]: both eyes' regions (eye_region) of a picture at `landmarks`."""
    mask = np.zeros((size, size), np.float32)
    for eye in range(len(EYE_OUTLINES)):
        (x0, y0, x1, y1), _, area = eye_region(landmarks, eye, size)
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], area)
    return mask


def mouth_area(target: np.ndarray, size: int):
    """Where a mouth open at `target` is drawn from another picture: (box, the inner lips in the box, their
    mask grown a pixel and feathered, so the seam falls on the lip line; weight, full from MOUTH_FULL), or
    None while the mouth is closed."""
    gap = lip_gap(target)
    if gap < OPEN_MOUTH * 0.6:
        return None
    weight = float(np.clip((gap - OPEN_MOUTH * 0.6) / (MOUTH_FULL - OPEN_MOUTH * 0.6), 0, 1))
    lips = target[INNER_LIPS]
    width = float(np.ptp(lips[:, 0]))
    x0, y0, x1, y1 = box = _box(lips, 0.25 * width + 4, size)
    local = lips[:, :2] - (x0, y0)
    return box, local, polygon_mask((y1 - y0, x1 - x0), local, grow=1.0, feather=1.0), weight


def draw_mouth(out: np.ndarray, target: np.ndarray, warper: FaceWarper | None, area=None) -> np.ndarray:
    """Draw the mouth interior of `out` (a frame at `target`) from `warper`'s picture warped to `target`,
    its colour matched to the lips around it; with no warper, darken it. In place; returns `out`."""
    area = area or mouth_area(target, out.shape[0])
    if area is None:
        return out
    (x0, y0, x1, y1), local, inner, weight = area
    region = out[y0:y1, x0:x1].astype(np.float32)
    if warper is None:
        patch = region * 0.7
    else:
        ring = (polygon_mask(inner.shape, local, grow=4.0) > 0.5) & (inner < 0.02)
        patch = _match_colour(warper.warp(target, (x0, y0, x1, y1)), region, inner > 0.5, ring)
    alpha = (weight * inner)[..., None]
    out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


class ReferenceBlender:
    """The receiver's reference stills and the blend of them into a warped frame."""

    def __init__(self, still: Still):
        self.still = still
        self.still_open = eye_openness(still.landmarks)
        self.still_gap = lip_gap(still.landmarks)
        self.still_teeth = teeth_share(still.image, still.landmarks)
        self.references: dict[int, Reference] = {}
        self.synthetic = self._reference(SYNTHETIC, closed_eyes(still))

    @staticmethod
    def _reference(index: int, still: Still) -> Reference:
        return Reference(index, still, FaceWarper(still.image, still.landmarks), lip_gap(still.landmarks),
                         eye_openness(still.landmarks), teeth_share(still.image, still.landmarks))

    def add(self, index: int, still: Still) -> Reference:
        """Cache (or replace) reference `index`."""
        ref = self._reference(index, still)
        # Copy on write: a render in a worker thread may be reading the old dict right now.
        self.references = {**self.references, index: ref}
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
        area = mouth_area(target, out.shape[0])
        if area is None:
            return
        gap = lip_gap(target)
        sources = [r for r in list(self.references.values()) if r.gap >= OPEN_MOUTH]
        if self.still_gap >= OPEN_MOUTH:
            sources.append(None)       # the still's own open mouth, which the warp already drew
        if not sources:
            if gap >= DARK_MOUTH:
                draw_mouth(out, target, None, area)   # nothing shows this mouth open yet: darker
            return
        ref = min(sources, key=lambda source: self._mouth_mismatch(source, target, gap))
        if ref is not None:
            draw_mouth(out, target, ref.warper, area)

    def _mouth_mismatch(self, ref: Reference | None, target: np.ndarray, gap: float) -> float:
        """How unlike the target's mouth a source's is (None: the still)."""
        source_gap, teeth = (self.still_gap, self.still_teeth) if ref is None else (ref.gap, ref.teeth)
        return abs(np.log(source_gap / max(gap, 1e-3))) - TEETH_WEIGHT * teeth

    # --- eyes -----------------------------------------------------------------------------------------

    def _eye_area(self, target: np.ndarray, eye: int, size: int):
        """Where the closing eye `eye` is drawn from a closed-eye picture: (box, outline in the box, the
        area's mask in the box, weight), or None while the eye is open."""
        opened = float(eye_openness(target)[eye])
        still_open = float(self.still_open[eye])
        if opened >= EYE_START * still_open:
            return None
        box, local, area = eye_region(target, eye, size)
        # Fully closed-eye texture from CLOSED_SHARE of the still's openness down: MediaPipe (and a
        # viewer) reads a warped open eye as open even when its lids are drawn half way down, and a
        # cross-fade of an open and a closed eye reads as neither.
        start, full = EYE_START * still_open, CLOSED_SHARE * still_open
        return box, local, area, float(np.clip((start - opened) / (start - full), 0, 1))

    def closing_eyes(self, target: np.ndarray, size: int) -> np.ndarray | None:
        """(size, size) in [0, 1]: how much of each pixel the blend draws from a closed-eye picture for
        `target` (None while both eyes are open), so that a later repair can leave a blink as drawn."""
        alpha = None
        for eye in range(2):
            found = self._eye_area(target, eye, size)
            if found is None:
                continue
            (x0, y0, x1, y1), _, area, weight = found
            alpha = np.zeros((size, size), np.float32) if alpha is None else alpha
            alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], weight * area)
        return alpha

    def _eye(self, out: np.ndarray, target: np.ndarray, eye: int) -> None:
        found = self._eye_area(target, eye, out.shape[0])
        if found is None:
            return
        box, local, area, weight = found
        x0, y0, x1, y1 = box
        region = out[y0:y1, x0:x1].astype(np.float32)
        width = float(np.ptp(local[:, 0]))
        still_open = float(self.still_open[eye])
        closed = [r for r in list(self.references.values()) if r.openness[eye] < CLOSED_SHARE * still_open]
        ref = min(closed, key=lambda r: r.openness[eye]) if closed else self.synthetic
        patch = ref.warper.warp(target, box)
        ring = (polygon_mask(region.shape, local, grow=0.45 * width) > 0.5) & (area < 0.02)
        patch = _match_colour(patch, region, area > 0.5, ring)
        alpha = (weight * area)[..., None]
        out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
