"""Pose + expression code of a frame relative to the caller's still, and the way back to landmarks.

code   = basis · (canonical(frame) − canonical(still))     on the sender
target = pose(canonical(still) + basisᵀ · code)             on the receiver
"""

from __future__ import annotations

import numpy as np

from .basis import ExpressionBasis
from .crop import CROP_SIZE
from .pose import Pose, estimate_pose


class FaceCoder:
    """Both ends build one from the same still landmarks (crop pixels) and the same basis."""

    def __init__(self, basis: ExpressionBasis, still_landmarks: np.ndarray):
        self.basis = basis
        self.still_landmarks = np.asarray(still_landmarks, dtype=np.float64)
        self.still_pose = self.pose_of(self.still_landmarks)
        self.still_canonical = self.still_pose.to_canonical(self.still_landmarks / CROP_SIZE)

    def pose_of(self, landmarks: np.ndarray) -> Pose:
        return estimate_pose(np.asarray(landmarks) / CROP_SIZE, self.basis.mean_shape,
                             self.basis.rigid_idx)

    def encode(self, landmarks: np.ndarray) -> tuple[Pose, np.ndarray]:
        """Crop-pixel landmarks of a frame to (pose, expression code)."""
        pose = self.pose_of(landmarks)
        canonical = pose.to_canonical(np.asarray(landmarks) / CROP_SIZE)
        return pose, self.basis.project(canonical - self.still_canonical)

    def landmarks(self, pose: Pose, code: np.ndarray) -> np.ndarray:
        """Target landmarks in crop pixels (x, y, z) for a pose and a code."""
        canonical = self.still_canonical + self.basis.expand(np.asarray(code, dtype=np.float64))
        return pose.apply(canonical) * CROP_SIZE
