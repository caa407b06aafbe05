"""The sender's feature loop: frame → tracker → stable crop → pose + code → packet."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import FaceCoder
from callsynth.face.crop import StableCrop
from callsynth.face.still import Still
from callsynth.face.tracker import FaceTracker
from callsynth.wire import Codec, FrameFeatures


@dataclass
class SentFrame:
    crop: np.ndarray            # the frame as the stable crop sees it (what the receiver should show)
    packet: bytes | None        # None on frames that are not sent (packet rate below frame rate)
    found: bool
    reason: str = ""
    timings_ms: dict = field(default_factory=dict)


class FeatureEncoder:
    """Turns each captured frame into at most one packet; sends every `send_every`-th frame."""

    def __init__(self, basis: ExpressionBasis, still: Still, fps: float = 30.0, send_every: int = 2,
                 smoothing: bool = True):
        """`still` is the face codes are measured from: in a call, the caller's own still."""
        if send_every < 1:
            raise ValueError("send_every must be at least 1")
        self.codec = Codec(basis)
        self.coder = FaceCoder(basis, still.landmarks)
        self.tracker = FaceTracker(video=True, smoothing=smoothing, fps=fps)
        self.crop = StableCrop()
        self.send_every = send_every
        self.frame_index = 0
        self.seq = 0

    def close(self) -> None:
        self.tracker.close()

    def process(self, frame: np.ndarray, capture_ms: int, flags: int = 0) -> SentFrame:
        t0 = time.perf_counter()
        result = self.tracker.process(frame)
        t1 = time.perf_counter()
        box = self.crop.update(result.landmarks, frame.shape)
        crop = box.cut(frame)
        send = self.frame_index % self.send_every == 0
        self.frame_index += 1
        packet = None
        if send:
            features = FrameFeatures(self.seq, capture_ms, flags=flags)
            if result.found:
                features.pose, features.code = self.coder.encode(box.to_crop(result.landmarks))
            packet = self.codec.encode(features)
            self.seq = (self.seq + 1) & 0xFFFF
        t2 = time.perf_counter()
        return SentFrame(crop, packet, result.found, result.reason,
                         {"track": (t1 - t0) * 1e3, "encode": (t2 - t1) * 1e3})
