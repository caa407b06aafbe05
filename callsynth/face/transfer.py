"""Identity transfer (FIG. 7–9, claims 23–24): the face of A set into the picture of B, so that the result
has A's identity and B's scene, hair and lighting.

The generator's identity vector alone did not move a crop towards A (combine returned B's crop, mean
difference under 1/255). What does on a CPU is the classic landmark-aligned transfer:

1. A's still warped to the target landmarks drawn with A's own face shape (the renderer a call uses for
   A), so the inner face — eyes, brows, nose, mouth, the proportions that face recognition reads — is A's;
2. its colour matched to B's face (mean and spread per Lab channel, inside the face outline), so the
   skin takes B's light;
3. set into B by Poisson blending (OpenCV's seamless clone) inside A's face outline, shrunk so that A's
   hairline and background stay out: at the seam the gradient field is B's, so no edge shows.

The generator may refine the result afterwards (callsynth combine); this part works without it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .regions import polygon_mask
from .warp import FACE_OVAL

SHRINK = 0.07         # the pasted region: the face outline pulled in by this share of the face's width
SPREAD_LIMITS = (0.6, 1.6)   # how far a channel's spread may be rescaled when matching colour


def face_width(landmarks: np.ndarray) -> float:
    oval = np.asarray(landmarks)[FACE_OVAL, :2]
    return float(np.ptp(oval[:, 0]))


def inner_face_mask(shape, landmarks: np.ndarray) -> np.ndarray:
    """uint8 {0, 255} mask of the face outline pulled in towards its centre by SHRINK of the face width
    (A's hairline, ears and background stay out), never touching the picture's border (seamless clone
    needs a margin)."""
    oval = np.asarray(landmarks, np.float64)[FACE_OVAL, :2]
    centre = oval.mean(axis=0)
    radius = np.linalg.norm(oval - centre, axis=1, keepdims=True)
    pulled = oval - (oval - centre) / np.maximum(radius, 1e-6) * SHRINK * face_width(landmarks)
    mask = (polygon_mask(shape, pulled) > 0.5).astype(np.uint8) * 255
    mask[:2, :] = mask[-2:, :] = 0
    mask[:, :2] = mask[:, -2:] = 0
    return mask


def match_colour(source: np.ndarray, source_mask: np.ndarray, target: np.ndarray,
                 target_mask: np.ndarray) -> np.ndarray:
    """`source` (RGB uint8) with each Lab channel's mean and spread inside source_mask moved to the
    target's inside target_mask."""
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    dst = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_in, d_in = src[source_mask > 0], dst[target_mask > 0]
    if len(s_in) < 16 or len(d_in) < 16:
        return source.copy()
    s_mean, s_std = s_in.mean(axis=0), s_in.std(axis=0) + 1e-3
    d_mean, d_std = d_in.mean(axis=0), d_in.std(axis=0) + 1e-3
    gain = np.clip(d_std / s_std, *SPREAD_LIMITS)
    out = (src - s_mean) * gain + d_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste_face(face: np.ndarray, face_landmarks: np.ndarray, scene: np.ndarray,
               scene_landmarks: np.ndarray) -> np.ndarray:
    """`face`'s inner face (at face_landmarks) set into `scene` (its own face at scene_landmarks, the
    same place up to face shape): colour matched, then Poisson blended. Both RGB uint8 of one size."""
    if face.shape != scene.shape:
        raise ValueError(f"face {face.shape} and scene {scene.shape} must be pictures of one size")
    mask = inner_face_mask(face.shape, face_landmarks)
    if cv2.countNonZero(mask) < 64:
        return scene.copy()       # a face too small or off the picture: nothing to set in
    matched = match_colour(face, mask, scene, inner_face_mask(scene.shape, scene_landmarks))
    x, y, w, h = cv2.boundingRect(mask)
    centre = (x + w // 2, y + h // 2)
    return cv2.seamlessClone(matched, scene, mask, centre, cv2.NORMAL_CLONE)
