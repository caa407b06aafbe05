"""Speech to (pose, code) for the receiver's renderer: mouth from the network, blinks and head sway from
IdleMotion. Used by the offline renderer, and — one streaming driver, fed the call's audio frames as they
come (`push_frame`) — by the sender with its camera off and by the receiver when feature packets stop but
the voice goes on."""

from __future__ import annotations

import logging

import numpy as np

from callsynth.face.pose import Pose, interpolate_pose

from .features import SAMPLE_RATE, SILENT_LEVEL
from .idle import IdleMotion
from .model import Audio2ExpModel
from .stream import StreamingMouth, offline_codes

log = logging.getLogger("callsynth.speech")

SILENT_WARN_S = 2.0       # a streamed voice silent this long is said
# When the voice takes over from the camera, its head starts where the caller's was and comes back to the
# still's at rest over this long (eased at both ends), as a person settles back facing the screen: starting
# at rest turned the whole head to the camera as the voice took over (a two-way call's camera-off key, or
# the receiver's fallback when packets stop), the caller's whole turn within the 200 ms of a switch.
RETURN_S = 3.0


class SilenceWatch:
    """A streamed voice that has gone silent (digital zero: a muted or dead microphone, a silent track)
    drives a closed mouth; that is said once it has lasted SILENT_WARN_S, and said again when sound
    comes back, so a face that stopped talking is not taken for a fault of the model. `driving`: whether
    the voice drives the face now; the receiver's fallback listens all the time but drives only when
    feature packets stop, and a muted caller whose face still comes by packets is no fault to report."""

    def __init__(self, rate: int = SAMPLE_RATE, driving: bool = True):
        self.rate, self.quiet, self.said, self.driving = rate, 0, False, driving

    def push(self, samples: np.ndarray) -> None:
        loud = np.flatnonzero(np.abs(samples) > SILENT_LEVEL)
        if loud.size:
            if self.said:
                log.info("the voice has sound again after %.1f s of silence", (self.quiet + loud[0]) / self.rate)
            self.quiet, self.said = len(samples) - 1 - loud[-1], False
        else:
            self.quiet += len(samples)
        if self.driving and not self.said and self.quiet >= SILENT_WARN_S * self.rate:
            self.said = True
            log.warning("the voice has been silent (digital zero or nearly) for %.0f s: the speech-driven "
                        "mouth stays closed", self.quiet / self.rate)


class SpeechDriver:
    def __init__(self, model: Audio2ExpModel, rest_pose: Pose, fps: float = 30.0, seed: int = 0,
                 driving: bool = True):
        self.model, self.rest, self.fps = model, rest_pose, fps
        self.idle = IdleMotion(seed)
        self.stream = StreamingMouth(model, fps)
        self.loudness: list[tuple[float, float]] = []
        self.samples_seen = 0
        self.leftover = np.zeros(0, np.float32)
        self.resampler = None          # PyAV's, made at the first audio frame (any rate and layout in)
        self.silence = SilenceWatch(driving=driving)
        # start_from's latest request (pose, number), written by any thread; read by the pushing one, which
        # keeps what it is doing with it in `returning` (pose, stream time it started, number)
        self.request: tuple[Pose, int] | None = None
        self.returning: tuple[Pose, float, int] | None = None

    def start_from(self, pose: Pose) -> None:
        """Let the head of the frames from the next one on start at `pose` (the caller's as last tracked or
        shown) and come back to the still's at rest over RETURN_S. Safe from another thread than the one
        pushing audio: it only replaces `request`, which that thread never writes."""
        number = self.request[1] + 1 if self.request is not None else 1
        self.request = (pose, number)

    def state(self, t: float, mouth: np.ndarray, loudness: float = 0.0) -> tuple[Pose, np.ndarray]:
        code = mouth + self.idle.blink(t) * self.model.blink_code
        return self.idle.head(t, self._base_pose(t), loudness), code.astype(np.float64)

    def _base_pose(self, t: float) -> Pose:
        """The pose the sway turns: the still's at rest, or on the way back to it from start_from's."""
        request = self.request
        if request is not None and (self.returning is None or self.returning[2] != request[1]):
            self.returning = (request[0], t, request[1])
        if self.returning is None:
            return self.rest
        pose, since, _ = self.returning
        x = min(max((t - since) / RETURN_S, 0.0), 1.0)
        return self.rest if x >= 1.0 else interpolate_pose(pose, self.rest, x * x * (3 - 2 * x))

    def push(self, samples: np.ndarray) -> list[tuple[float, Pose, np.ndarray]]:
        """Feed 16 kHz samples; get (time s, pose, code) of each frame that became ready."""
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self.silence.push(samples)
        self._note_loudness(samples)
        return [(t, *self.state(t, code, self._loudness_at(t))) for t, code in self.stream.push(samples)]

    def push_frame(self, frame) -> list[tuple[float, Pose, np.ndarray]]:
        """Feed one audio frame of a call (av.AudioFrame, any rate, layout and format): it is resampled to
        16 kHz mono here, so the sender and the receiver drive faces from the voice the same way."""
        return self.push_frames([frame])

    def push_frames(self, frames) -> list[tuple[float, Pose, np.ndarray]]:
        """Feed several audio frames at once (the voice of the last seconds, priming a driver that takes
        over): one pass of the features and the network over all of them. Pushed one by one, 89 frames
        took 11 s on a machine emulated 4x slower, and the call had ended before the voice drove it."""
        import av

        if self.resampler is None:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [f.to_ndarray().ravel() for frame in frames for f in self.resampler.resample(frame)]
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
