"""Speech to (pose, code) for the receiver's renderer: mouth from the network, blinks and head sway from
IdleMotion. Used by the offline renderer, and — one streaming driver, fed the call's audio frames as they
come (`push_frame`) — by the sender with its camera off and by the receiver when feature packets stop but
the voice goes on."""

from __future__ import annotations

import numpy as np

from callsynth.face.pose import Pose

from .features import SAMPLE_RATE
from .idle import IdleMotion
from .model import Audio2ExpModel
from .stream import StreamingMouth, offline_codes


class SpeechDriver:
    def __init__(self, model: Audio2ExpModel, rest_pose: Pose, fps: float = 30.0, seed: int = 0):
        import torch

        torch.set_num_threads(1)  # one small window at a time: extra threads only fight the call's own
        self.model, self.rest, self.fps = model, rest_pose, fps
        self.idle = IdleMotion(seed)
        self.stream = StreamingMouth(model, fps)
        self.loudness: list[tuple[float, float]] = []
        self.samples_seen = 0
        self.leftover = np.zeros(0, np.float32)
        self.resampler = None          # PyAV's, made at the first audio frame (any rate and layout in)

    def state(self, t: float, mouth: np.ndarray, loudness: float = 0.0) -> tuple[Pose, np.ndarray]:
        code = mouth + self.idle.blink(t) * self.model.blink_code
        return self.idle.head(t, self.rest, loudness), code.astype(np.float64)

    def push(self, samples: np.ndarray) -> list[tuple[float, Pose, np.ndarray]]:
        """Feed 16 kHz samples; get (time s, pose, code) of each frame that became ready."""
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self._note_loudness(samples)
        return [(t, *self.state(t, code, self._loudness_at(t))) for t, code in self.stream.push(samples)]

    def push_frame(self, frame) -> list[tuple[float, Pose, np.ndarray]]:
        """Feed one audio frame of a call (av.AudioFrame, any rate, layout and format): it is resampled to
        16 kHz mono here, so the sender and the receiver drive faces from the voice the same way."""
        import av

        if self.resampler is None:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [f.to_ndarray().ravel() for f in self.resampler.resample(frame)]
        return self.push(np.concatenate(chunks)) if chunks else []

    def flush(self) -> list[tuple[float, Pose, np.ndarray]]:
        return [(t, *self.state(t, code, self._loudness_at(t))) for t, code in self.stream.flush()]

    def offline(self, samples: np.ndarray) -> list[tuple[float, Pose, np.ndarray]]:
        self._note_loudness(np.asarray(samples, dtype=np.float32), keep=None)
        times, codes = offline_codes(self.model, samples, self.fps)
        return [(t, *self.state(t, c, self._loudness_at(t))) for t, c in zip(times, codes)]

    def _note_loudness(self, samples: np.ndarray, keep: int | None = 600) -> None:
        """Loudness of every 100 ms block, in [0, 1] (-50 to -20 dBFS), by the block's centre time."""
        step = SAMPLE_RATE // 10
        buffered = np.concatenate([self.leftover, samples])
        whole = len(buffered) // step * step
        for i in range(0, whole, step):
            rms = float(np.sqrt(np.mean(buffered[i:i + step] ** 2)))
            t = (self.samples_seen + i + step / 2) / SAMPLE_RATE
            self.loudness.append((t, float(np.clip((20 * np.log10(rms + 1e-9) + 50) / 30, 0, 1))))
        self.samples_seen += whole
        self.leftover = buffered[whole:]
        if keep:
            del self.loudness[:-keep]

    def _loudness_at(self, t: float) -> float:
        if not self.loudness:
            return 0.0
        times = np.array([x for x, _ in self.loudness])
        return float(self.loudness[int(np.argmin(np.abs(times - t)))][1])
