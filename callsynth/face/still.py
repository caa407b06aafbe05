"""The caller's still: the one picture the receiver keeps, cropped and landmarked the same way on both ends."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crop import box_for_face
from .tracker import FaceTracker, as_rgb_uint8


class NoFaceError(ValueError):
    """The identity still shows no face, so there is nothing to animate."""


@dataclass
class Still:
    image: np.ndarray       # CROP_SIZE x CROP_SIZE RGB
    landmarks: np.ndarray   # (478, 3) in crop pixels


def prepare_still(frame, source: str = "identity still") -> Still:
    """Track the still in image mode (deterministic), crop it, and express its landmarks in the crop."""
    rgb = as_rgb_uint8(frame)
    with FaceTracker(video=False, smoothing=False) as tracker:     # image mode: one tracker, no state
        result = tracker.process(rgb)
        if not result.found:
            raise NoFaceError(f"{source}: no face found ({result.reason}); use a frontal picture of the caller")
        box = box_for_face(result.landmarks)
        still = Still(box.cut(rgb), box.to_crop(result.landmarks))
        # Landmarks re-tracked on the crop itself, so both ends agree with what the crop shows.
        again = tracker.process(still.image)
    if again.found:
        still.landmarks = again.landmarks.astype(np.float64)
    return still
