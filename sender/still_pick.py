"""Choosing the caller's still when none is given: the most frontal, most neutral, eyes-open frame of the
first moments of the call."""

from __future__ import annotations

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.pose import estimate_pose
from callsynth.face.regions import EYES, LIP_CENTRE
from callsynth.face.still import NoFaceError, Still, prepare_still
from callsynth.face.tracker import FaceTracker, inter_ocular

EYE_LIDS = tuple(eye[:2] for eye in EYES)  # upper and lower lid of each eye


def still_score(landmarks: np.ndarray, basis: ExpressionBasis) -> float:
    """Higher is better: facing the camera, mouth closed, eyes open (all relative to eye distance)."""
    eyes = inter_ocular(landmarks)
    pose = estimate_pose(landmarks / max(1.0, np.ptp(landmarks[:, 0])), basis.mean_shape, basis.rigid_idx)
    turn = float(np.linalg.norm(pose.rotvec))                       # radians away from the mean face
    mouth = float(np.linalg.norm(landmarks[LIP_CENTRE[0], :2] - landmarks[LIP_CENTRE[1], :2])) / eyes
    eye_open = float(np.mean([np.linalg.norm(landmarks[a, :2] - landmarks[b, :2]) for a, b in EYE_LIDS]))
    return -3.0 * turn - 2.0 * mouth + 4.0 * eye_open / eyes


def pick_still(frames: list[np.ndarray], basis: ExpressionBasis, stride: int = 3) -> tuple[Still, int]:
    """(still, index of the frame it came from); NoFaceError when no frame shows a face."""
    best, best_score = None, -np.inf
    with FaceTracker(video=False, smoothing=False) as tracker:
        for index in range(0, len(frames), stride):
            result = tracker.process(frames[index])
            if result.found:
                score = still_score(result.landmarks, basis)
                if score > best_score:
                    best, best_score = index, score
    if best is None:
        raise NoFaceError(f"no face in the first {len(frames)} frames; give --identity STILL")
    return prepare_still(frames[best], source=f"frame {best}"), best
