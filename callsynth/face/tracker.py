"""Face tracking on MediaPipe face mesh: 478 points (with irises) per frame, or an explicit "no face".

MediaPipe 0.10.14 ships the face-mesh model inside its wheel, so tracking runs offline.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np

from .regions import LIPS

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging

NUM_LANDMARKS = 478
# Outer eye corners, the denominator of the landmark NME (inter-ocular distance).
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263


@dataclass
class TrackResult:
    """Landmarks in pixels (x, y, and z on the scale of x), or None with the reason."""

    landmarks: np.ndarray | None
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.landmarks is not None


def as_rgb_uint8(frame) -> np.ndarray:
    """Coerce any decodable frame (gray, RGBA, float, strided) to contiguous RGB uint8."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"not an image: array of shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


BETA = 0.05          # the One-Euro filter's speed coefficient, per pixel a second: the face's points
LIP_BETA = 0.5       # the lips', which move at a syllable rate (OneEuroFilter)


def point_betas() -> np.ndarray:
    """The speed coefficient of each of the 478 points, (478, 1): LIP_BETA on the lips, BETA elsewhere."""
    betas = np.full((NUM_LANDMARKS, 1), BETA)
    betas[LIPS] = LIP_BETA
    return betas


class OneEuroFilter:
    """Speed-adaptive low-pass (Casiez et al. 2012): steady points stay still, fast motion has no lag.

    The cutoff for a still point is 8 Hz; it was 3, which the speed adaptation did not undo for lips moving
    at a syllable rate (4-8 a second) or a head turning at an ordinary pace: the sender's points lagged
    (about 50 ms at rest) and fell short of where the face went. `callsynth eval --warp-only`, seven
    validation clips, one packet every 2 frames (2-core Intel Xeon at 2.1 GHz, 2026-11-30), 3 Hz → 8 Hz:
    landmark NME 1.54 → 1.37 %, mouth interior error 28.5 → 26.8, blink recall 92 → 97 %, SSIM 0.7975 →
    0.7992; the upper face's frame-to-frame shake (mean second difference of its pixels, a /tmp probe around
    `reenact`) 1.41 → 1.48 on a still GRID speaker, still under the real video's 1.53 (unfiltered: 1.67, over
    it).

    The lips' cutoff rises ten times faster with their speed (LIP_BETA): at rest they are filtered as the
    rest of the face, moving they pass almost unfiltered. With one beta for all, the filter still lagged an
    opening mouth: the real frame's own mouth moved to the sent lips lost 14.1 → 19.7 of interior error to
    the filter alone on Katie's open-mouth frames (12.4 → 18.8 on AlexandriaOcasioCortez's; /tmp probes,
    2-core Intel Xeon at 2.1 GHz); see README, "The lips are filtered less"."""

    def __init__(self, min_cutoff: float = 8.0, beta: float | np.ndarray = BETA, d_cutoff: float = 1.0):
        """`beta`: how fast the cutoff rises with a point's speed; one number, or one per point ((N, 1))."""
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.prev: np.ndarray | None = None
        self.dprev: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.prev = self.dprev = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        if self.prev is None:
            self.prev, self.dprev = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.prev) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dprev = a_d * dx + (1 - a_d) * self.dprev
        # The cutoff adapts to each point's own speed (pixels per second): a blink moves the lids fast
        # while the face is still, and a cutoff set by the whole face's speed lagged them by frames.
        speed = np.linalg.norm(self.dprev, axis=-1, keepdims=True) if x.ndim > 1 else np.abs(self.dprev)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.prev = a * x + (1 - a) * self.prev
        return self.prev


# One point of MediaPipe's NormalizedLandmarkList as protobuf serialises it: a 15-byte submessage (tag 0x0a,
# length 15) holding x, y, z as fixed 32-bit floats (tags 0x0d, 0x15, 0x1d).
_POINT_BYTES = 17
_POINT_TAGS = {0: 0x0A, 1: 15, 2: 0x0D, 7: 0x15, 12: 0x1D}


def landmark_array(face) -> np.ndarray:
    """(N, 3) float32 normalised x, y, z of a NormalizedLandmarkList. Read from its serialised bytes when
    every point has exactly x, y and z (0.03 ms for 478 points, where reading the attributes point by
    point took 0.35 ms of every tracked frame); attribute by attribute otherwise (visibility set, say)."""
    raw = np.frombuffer(face.SerializeToString(), np.uint8)
    if raw.size and raw.size % _POINT_BYTES == 0:
        points = raw.reshape(-1, _POINT_BYTES)
        if all((points[:, col] == tag).all() for col, tag in _POINT_TAGS.items()):
            floats = np.ascontiguousarray(points[:, 2:].reshape(-1, 3, 5)[:, :, 1:])
            return floats.view("<f4").reshape(-1, 3)
    return np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)


@contextlib.contextmanager
def _quiet_native_stderr():
    """MediaPipe's C++ side prints start-up chatter straight to fd 2; hide it, keep Python errors."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceTracker:
    """MediaPipe face mesh in video (tracking) or image mode; the largest face when there are several."""

    def __init__(self, video: bool = True, smoothing: bool = True, fps: float = 30.0,
                 max_faces: int = 4, min_detection_confidence: float = 0.5):
        import mediapipe as mp

        with _quiet_native_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=0.5,
            )
            # The graph's inference calculators open on MediaPipe's own threads as the first picture goes
            # through, and print their start-up chatter then (XNNPACK, "Feedback manager ..." twice):
            # one blank picture now, while fd 2 is quiet, so that the command's output has none of it.
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self._filter = OneEuroFilter(beta=point_betas()) if (smoothing and video) else None
        self._dt = 1.0 / fps

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def process(self, frame) -> TrackResult:
        """Landmarks of the largest face in an RGB frame; never raises on a decodable frame."""
        try:
            rgb = as_rgb_uint8(frame)
        except ValueError as exc:
            return self._lost(str(exc))
        h, w = rgb.shape[:2]
        if h < 16 or w < 16:
            return self._lost(f"frame too small ({w}x{h})")
        try:
            result = self._mesh.process(rgb)
        except Exception as exc:  # MediaPipe raises plain RuntimeErrors on odd input.
            return self._lost(f"tracker error: {exc}")
        faces = result.multi_face_landmarks
        if not faces:
            return self._lost("no face")
        best, best_area = None, -1.0
        for face in faces:
            pts = landmark_array(face) * np.array([w, h, w], np.float32)
            span = pts[:, :2].max(0) - pts[:, :2].min(0)
            if span[0] * span[1] > best_area:
                best, best_area = pts, float(span[0] * span[1])
        if best.shape[0] != NUM_LANDMARKS:
            return self._lost(f"unexpected landmark count {best.shape[0]}")
        if self._filter is not None:
            best = self._filter(best, self._dt).astype(np.float32)
        return TrackResult(best)

    def warm_up(self, frame) -> None:
        """Run once on `frame` and forget it: MediaPipe builds its graph on the first call (a second or
        more), which belongs before a call, not on its first frame."""
        self.process(frame)
        if self._filter is not None:
            self._filter.reset()

    def _lost(self, reason: str) -> TrackResult:
        if self._filter is not None:
            self._filter.reset()
        return TrackResult(None, reason)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners, in the landmarks' units."""
    return float(np.linalg.norm(landmarks[LEFT_EYE_OUTER, :2] - landmarks[RIGHT_EYE_OUTER, :2]))
