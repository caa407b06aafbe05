"""The caller's still: the one picture the receiver keeps, cropped and landmarked the same way on both ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crop import box_for_face
from .tracker import FaceTracker, as_rgb_uint8


log = logging.getLogger("callsynth.still")

LANDMARK_STEP = 1 / 32     # crop pixels: a still's landmarks lie on this grid (below)


class NoFaceError(ValueError):
    """The identity still shows no face, so there is nothing to animate."""


def on_landmark_grid(landmarks) -> np.ndarray:
    """`landmarks` rounded to LANDMARK_STEP (at most 1/64 pixel away), float64."""
    return np.round(np.asarray(landmarks, dtype=np.float64) / LANDMARK_STEP) * LANDMARK_STEP


@dataclass
class Still:
    """A picture of the caller and its landmarks. The landmarks are held on a grid of 1/32 pixel: the
    identity message carries them as whole steps (wire.py, two bytes a number instead of four), so the
    still a sender measures codes against and the one its receiver rebuilds are the same to the bit."""

    image: np.ndarray       # CROP_SIZE x CROP_SIZE RGB
    landmarks: np.ndarray   # (478, 3) in crop pixels, multiples of LANDMARK_STEP

    def __setattr__(self, name, value):
        object.__setattr__(self, name, on_landmark_grid(value) if name == "landmarks" else value)


def prepare_still(frame, source: str = "identity still") -> Still:
    """Track the still in image mode (deterministic), crop it, and express its landmarks in the crop."""
    with FaceTracker(video=False, smoothing=False) as tracker:     # image mode: one tracker, no state
        return _still_from(tracker, as_rgb_uint8(frame), source)


def _still_from(tracker: FaceTracker, rgb: np.ndarray, source: str, result=None) -> Still:
    """prepare_still with an image-mode `tracker` already open, and `result` when it has tracked `rgb`."""
    result = tracker.process(rgb) if result is None else result
    if not result.found:
        raise NoFaceError(f"{source}: no face found ({result.reason}); use a frontal picture of the caller")
    box = box_for_face(result.landmarks)
    still = Still(box.cut(rgb), box.to_crop(result.landmarks))
    # Landmarks re-tracked on the crop itself, so both ends agree with what the crop shows.
    again = tracker.process(still.image)
    if again.found:
        still.landmarks = again.landmarks
    return still


STILL_SEARCH_S = 30.0      # how far into a video still_of looks for a face


def still_of(path: str | Path, search_s: float = STILL_SEARCH_S) -> Still:
    """The still of a picture file, or of a video its first frame that shows a face: a video may open on a
    title card, a fade from black or a hand (its first frame alone was refused as showing no face). Only
    its first `search_s` seconds are searched: a wrong file (an hour's screen recording) was tracked to its
    end, minutes, before it was refused."""
    from ..media import IMAGE_SUFFIXES, iter_timed_frames, read_still

    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return prepare_still(read_still(path), source=str(path))
    first = None
    with FaceTracker(video=False, smoothing=False) as tracker:     # one tracker for the frames and the still
        for index, (at, frame) in enumerate(iter_timed_frames(path)):
            first = at if first is None else first
            if at - first > search_s:
                raise NoFaceError(f"{path}: no face found in its first {search_s:g} s; use a frontal picture "
                                  "of the caller, or a video that shows the face sooner")
            rgb = as_rgb_uint8(frame)
            result = tracker.process(rgb)
            if result.found:
                if index:
                    log.info("%s: the still is frame %d, the first that shows a face", path, index)
                return _still_from(tracker, rgb, f"{path} frame {index}", result)
    raise NoFaceError(f"{path}: no face found in any frame; use a frontal picture of the caller")
