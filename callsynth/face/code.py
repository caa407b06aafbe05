"""Pose + expression code of a frame relative to the caller's still, and the way back to landmarks.

code   = basis · (canonical(frame) − canonical(still))     on the sender
target = pose(canonical(still) + basisᵀ · code)             on the receiver

The K PCA coefficients truncate the irises (gaze keeps its direction but a third of its amplitude), so
gaze travels beside them: two numbers, the iris offset over eye width relative to the still's. They also
miss part of how far the lips part, by a share that depends on the face (a third of it too small on one
caller, a fifth too large on another: the basis's average mouth opens unlike theirs), so the lip gap's
correction travels beside them as well: one number, what the code's lips lack, in iris distances. Last
comes the mouth cue: which picture's mouth interior looked most like the camera's (the mouth source, a
discrete choice the sender makes, sender/mouth_choice.py) and how the real interior differs from the one
the receiver draws (the interior code, face/interior_code.py); both 0 here, where nothing is compared. An
"expression" is the code followed by the gaze, the lip correction, the mouth source and the interior code
(K + 5); `landmarks` takes the code alone, the code and gaze (K + 2), or more (the mouth cue plays no part
in landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .basis import ExpressionBasis
from .crop import CROP_SIZE
from .pose import Pose, estimate_pose
from .regions import GAZE_DIMS, eye_gazes, gaze, lip_gap, open_lips, with_gaze

BESIDE = GAZE_DIMS + 3     # what travels beside the code: the gaze, the lip gap's correction, the mouth cue (2)
CUE = slice(-2, None)      # the mouth cue's place in an expression (its last two elements)


@dataclass(frozen=True)
class MouthCue:
    """What the sender says of a mouth beyond its shape (discrete: a blend of two packets takes one whole):
    the picture to draw an open mouth's interior from (`source`: 0 the receiver's choice, i + 1 identity
    index i) and the interior code (`interior`: face/interior_code.py, 0 none)."""
    source: int = 0
    interior: int = 0


NO_CUE = MouthCue()


def join_expression(code: np.ndarray, gaze_delta: np.ndarray, lips: float, cue: MouthCue = NO_CUE) -> np.ndarray:
    """An expression: the K code coefficients, then the gaze, the lip correction and the mouth cue."""
    return np.concatenate([code, gaze_delta, [lips, cue.source, cue.interior]])


def expression_parts(expression: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray | None, float, MouthCue]:
    """(code, gaze, lip correction, mouth cue) of an expression (join_expression's inverse; the one place
    its layout is read): a shorter one has no gaze (None), no correction (0) and no cue (NO_CUE)."""
    expression = np.asarray(expression, dtype=np.float64)
    gaze_delta = expression[k:k + GAZE_DIMS].copy() if len(expression) >= k + GAZE_DIMS else None
    lips = float(expression[k + GAZE_DIMS]) if len(expression) > k + GAZE_DIMS else 0.0
    cue = NO_CUE
    if len(expression) >= k + BESIDE:
        source, interior = (max(0, int(round(float(v)))) for v in expression[k + GAZE_DIMS + 1:k + BESIDE])
        cue = MouthCue(source, interior)
    return expression[:k].copy(), gaze_delta, lips, cue


class FaceCoder:
    """Both ends build one from the same still landmarks (crop pixels) and the same basis."""

    def __init__(self, basis: ExpressionBasis, still_landmarks: np.ndarray):
        self.basis = basis
        self.still_landmarks = np.asarray(still_landmarks, dtype=np.float64)
        self.still_pose = self.pose_of(self.still_landmarks)
        self.still_canonical = self.still_pose.to_canonical(self.still_landmarks / CROP_SIZE)
        self.still_eye_gazes = eye_gazes(self.still_landmarks)
        self.still_gaze = self.still_eye_gazes.mean(axis=0)     # gaze(still landmarks), as gaze_delta compares
        self.expression_size = basis.k + BESIDE

    def pose_of(self, landmarks: np.ndarray) -> Pose:
        return estimate_pose(np.asarray(landmarks) / CROP_SIZE, self.basis.mean_shape,
                             self.basis.rigid_idx)

    def pose_free(self, landmarks: np.ndarray) -> tuple[Pose, np.ndarray]:
        """(pose, the landmarks with it taken out: canonical units) of crop-pixel landmarks."""
        pose = self.pose_of(landmarks)
        return pose, pose.to_canonical(np.asarray(landmarks) / CROP_SIZE)

    def encode(self, landmarks: np.ndarray) -> tuple[Pose, np.ndarray]:
        """Crop-pixel landmarks of a frame to (pose, expression code)."""
        pose, canonical = self.pose_free(landmarks)
        return pose, self._code(canonical)

    def _code(self, canonical: np.ndarray) -> np.ndarray:
        """The code of pose-free landmarks: their change from the still's, projected on the basis."""
        return self.basis.project(canonical - self.still_canonical)

    def gaze_delta(self, landmarks: np.ndarray) -> np.ndarray:
        """The frame's gaze minus the still's (2,): what the wire carries beside the code."""
        return gaze(landmarks) - self.still_gaze

    def expression(self, landmarks: np.ndarray) -> tuple[Pose, np.ndarray]:
        """(pose, code followed by the gaze delta, the lip correction and the mouth cue, none: the receiver's
        choice) of crop-pixel landmarks. The correction: how much further (iris distances; negative: less
        far) the frame's lips are parted than those the code makes, both pose-free (seen from the front)."""
        pose, canonical = self.pose_free(landmarks)
        code = self._code(canonical)
        lips = lip_gap(canonical) - lip_gap(self.still_canonical + self.basis.expand(code))
        return pose, join_expression(code, self.gaze_delta(landmarks), lips)

    def mouth_cue(self, expression: np.ndarray) -> MouthCue:
        """The mouth cue an expression carries (wire.FrameFeatures.mouth and .interior); NO_CUE for a bare
        code or a shorter expression."""
        return expression_parts(expression, self.basis.k)[3]

    def landmarks(self, pose: Pose, code: np.ndarray, gaze_gain: float = 1.0) -> np.ndarray:
        """Target landmarks in crop pixels (x, y, z) for a pose and a code (K) or an expression (K + 2: the
        irises then move by the gaze it carries, times `gaze_gain`, each from where the still has it; K + 3
        or more: the lips part by the correction too)."""
        code = np.asarray(code, dtype=np.float64)
        k = self.basis.k
        canonical = self.still_canonical + self.basis.expand(code[:k])
        if code.shape[-1] > k + GAZE_DIMS:
            canonical = open_lips(canonical, code[k + GAZE_DIMS])
        out = pose.apply(canonical) * CROP_SIZE
        if code.shape[-1] > k:
            # each iris from where the still has it: both moved to their mean drew the still's own eyes
            # looking elsewhere (up to a pixel), and the evaluator's gaze r fell (README "Each eye its own gaze")
            out = with_gaze(out, self.still_eye_gazes + gaze_gain * code[k:k + GAZE_DIMS])
        return out
