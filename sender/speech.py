"""Feature packets from the caller's voice: with the camera off, or while the camera sees no face, the
voice the call already sends also drives the face (packets flagged FLAG_AUDIO)."""

from __future__ import annotations

import logging
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from audio2exp.driver import SpeechDriver
from audio2exp.features import SAMPLE_RATE
from audio2exp.model import Audio2ExpModel
from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import FaceCoder
from callsynth.face.still import Still
from callsynth.wire import FLAG_AUDIO, Codec, FrameFeatures

log = logging.getLogger("callsynth.send")


class SpeechPackets:
    """Turns audio frames into packets at the call's packet rate; sends only while `active`."""

    def __init__(self, model: Audio2ExpModel, basis: ExpressionBasis, still: Still, fps: float,
                 send_every: int, send):
        self.driver = SpeechDriver(model, FaceCoder(basis, still.landmarks).still_pose, fps)
        self.codec = Codec(basis)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.fps, self.send_every, self.send = fps, send_every, send
        self.start_s: float | None = None   # wall time of the audio's sample 0
        self.active = False
        self.seq = 0
        self.packets = 0
        self.payload_bytes = 0

    def feed(self, frame: av.AudioFrame) -> None:
        if self.start_s is None:
            self.start_s = time.time() - float(frame.time or 0.0)
        samples = np.concatenate([f.to_ndarray().ravel() for f in self.resampler.resample(frame)] or
                                 [np.zeros(0, np.float32)])
        for t, pose, code in self.driver.push(samples):
            index = int(round(t * self.fps))
            if not self.active or index % self.send_every:
                continue
            capture_ms = int((self.start_s + t) * 1000) & 0xFFFFFFFF
            packet = self.codec.encode(FrameFeatures(self.seq, capture_ms, pose, code, flags=FLAG_AUDIO))
            self.seq = (self.seq + 1) & 0xFFFF
            if self.send(packet) == "sent":
                self.packets += 1
                self.payload_bytes += len(packet)


class TappedAudioTrack(MediaStreamTrack):
    """Passes another audio track's frames on to the call unchanged, showing each to `listener` first."""

    kind = "audio"

    def __init__(self, track: MediaStreamTrack, listener):
        super().__init__()
        self.track, self.listener = track, listener
        track.on("ended", self.stop)

    async def recv(self):
        frame = await self.track.recv()
        try:
            self.listener(frame)
        except Exception as exc:  # the voice must go on even if the face cannot follow it
            log.warning("speech-driven face failed on one frame: %s", exc)
        return frame

    def stop(self) -> None:
        super().stop()
        self.track.stop()
