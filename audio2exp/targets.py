"""What audio2exp predicts, measured on video: the mouth part of the expression code, the lip gap, and a
blink direction, all in the basis's canonical face units.

The mouth part of a code is the code that best reproduces the lips and chin alone (ridge least squares
on those landmarks). The basis's components are whole-face, so that code also moves the lids; what drives
a face from speech holds them (`mouth_holding_eyes`), leaving the eyes to the blink generator."""

from __future__ import annotations

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.pose import estimate_pose
from callsynth.face.regions import LIP_CENTRE
from callsynth.face.regions import LIPS as LIP_POINTS
from callsynth.face.tracker import inter_ocular

LIPS = [int(i) for i in LIP_POINTS]     # the 40 points of the lips, in ascending order
CHIN = [152, 148, 176, 149, 150, 136, 172, 58, 377, 400, 378, 379, 365, 397, 288]
MOUTH = LIPS + CHIN
EYE_LIDS = ((159, 145), (386, 374))
EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
        263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]


def region_projector(basis: ExpressionBasis, points: list[int], ridge: float = 1e-3) -> np.ndarray:
    """(K, len(points)*3) map from those points' canonical offsets to the code that best makes them."""
    comps = basis.components.reshape(basis.k, -1, 3)[:, points, :].reshape(basis.k, -1)  # K x P3
    gram = comps @ comps.T + ridge * np.eye(basis.k)
    return np.linalg.solve(gram, comps)


EYE_HOLD = 10.0   # weight of the eye points staying where they are, against reproducing the mouth


def mouth_holding_eyes(basis: ExpressionBasis, weight: float = EYE_HOLD, ridge: float = 1e-3) -> np.ndarray:
    """(K, K) map from a mouth code to the code that makes the same lips and chin with the eye points left
    where they are: least squares on the mouth points it makes plus `weight` times the eye points' motion.

    Speech-driven eyes narrowed as the mouth opened (the shipped model on a GRID sentence: down to a quarter
    of the still's eye opening between blinks), and the receiver's eye blend drew them closed. Held, the
    lip gap follows the unheld one at r 0.999 and the eyes stay at 0.99 of the still's."""
    comps = basis.components.reshape(basis.k, -1, 3)
    mouth = comps[:, MOUTH, :].reshape(basis.k, -1).T         # (P3, K)
    eyes = comps[:, EYES, :].reshape(basis.k, -1).T
    gram = mouth.T @ mouth + weight * eyes.T @ eyes + ridge * np.eye(basis.k)
    return np.linalg.solve(gram, mouth.T @ mouth)


def canonical_frames(landmarks: np.ndarray, basis: ExpressionBasis) -> np.ndarray:
    """(T, 478, 3) pose-free landmarks of every frame; NaN rows where the tracker lost the face."""
    out = np.full(landmarks.shape, np.nan, np.float64)
    for t, frame in enumerate(landmarks):
        if np.isfinite(frame).all():
            pts = frame.astype(np.float64) / 256.0
            out[t] = estimate_pose(pts, basis.mean_shape, basis.rigid_idx).to_canonical(pts)
    return out


def lip_gap(canonical: np.ndarray) -> np.ndarray:
    """Inner-lip distance over inter-ocular distance, for (..., 478, 3) canonical landmarks."""
    a, b = LIP_CENTRE
    gap = np.linalg.norm(canonical[..., a, :2] - canonical[..., b, :2], axis=-1)
    eyes = np.linalg.norm(canonical[..., 33, :2] - canonical[..., 263, :2], axis=-1)
    return gap / eyes


def eye_aperture(canonical: np.ndarray) -> np.ndarray:
    eyes = np.linalg.norm(canonical[..., 33, :2] - canonical[..., 263, :2], axis=-1)
    return np.mean([np.linalg.norm(canonical[..., a, :2] - canonical[..., b, :2], axis=-1)
                    for a, b in EYE_LIDS], axis=0) / eyes


def rest_frame(canonical: np.ndarray) -> int:
    """The frame whose mouth is most closed: the neutral reference codes are measured from."""
    gaps = lip_gap(canonical)
    return int(np.nanargmin(np.where(np.isfinite(gaps), gaps, np.inf)))


def mouth_codes(canonical: np.ndarray, reference: np.ndarray, projector: np.ndarray) -> np.ndarray:
    """(T, K) mouth part of each frame's code, relative to the reference face."""
    offsets = (canonical - reference)[:, MOUTH, :].reshape(len(canonical), -1)
    return offsets @ projector.T


def gap_of_code(code: np.ndarray, reference: np.ndarray, basis: ExpressionBasis) -> np.ndarray:
    """Lip gap of reference + basis · code, for codes (..., K)."""
    return lip_gap(reference + basis.expand(code))


__all__ = ["MOUTH", "EYES", "region_projector", "mouth_holding_eyes", "canonical_frames", "lip_gap",
           "eye_aperture", "rest_frame", "mouth_codes", "gap_of_code", "inter_ocular"]
