"""Feature packets from the caller's voice: with the camera off, or while the camera sees no face, the
voice the call already sends also drives the face (packets flagged FLAG_AUDIO)."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

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
CONTEXT_S = 2.0       # voice kept while the camera drives the face, to prime the model when it takes over


class SpeechPackets:
    """Turns audio frames into packets at the call's packet rate; sends only while `active`.

    While inactive (the camera sees the face) only the last CONTEXT_S of the voice is kept; the model starts
    when the packets are needed, primed with that context, so a call with its camera on pays nothing for
    the fallback. The work runs in a worker thread of its own: on the event loop it held up everything
    else, the data channels included (the still took 1.1 s to cross loopback with the voice on, 34 ms
    without)."""

    def __init__(self, model: Audio2ExpModel, basis: ExpressionBasis, still: Still, fps: float,
                 send_every: int, send):
        self.model, self.rest_pose = model, FaceCoder(basis, still.landmarks).still_pose
        self.driver: SpeechDriver | None = None        # made when the packets are first needed
        self.driver_origin_s = 0.0                     # stream time of the driver's sample 0
        self.context: list[tuple[float, np.ndarray]] = []   # (stream time, samples) while inactive
        self.codec = Codec(basis)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.fps, self.send_every, self.send = fps, send_every, send
        self.start_s: float | None = None   # wall time of the audio's sample 0
        self.active = False
        self.seq = 0
        self.packets = 0
        self.payload_bytes = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self.loop: asyncio.AbstractEventLoop | None = None

    def feed(self, frame: av.AudioFrame) -> None:
        """Called on the event loop for each audio frame: the work goes to the worker thread, in order,
        and the packets it makes are sent back on the loop."""
        self.loop = self.loop or asyncio.get_running_loop()
        done = self.loop.run_in_executor(self.worker, self.packets_for, frame)
        done.add_done_callback(self._send_all)

    def _send_all(self, done: asyncio.Future) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            log.warning("speech-driven face failed on one frame: %s", done.exception())
            return
        for packet in done.result():
            if self.send(packet) == "sent":
                self.packets += 1
                self.payload_bytes += len(packet)

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)

    def packets_for(self, frame: av.AudioFrame) -> list[bytes]:
        """The packets this audio frame completes (none while inactive); runs in the worker thread."""
        out = []
        stream_s = float(frame.time or 0.0)
        if self.start_s is None:
            self.start_s = time.time() - stream_s
        samples = np.concatenate([f.to_ndarray().ravel() for f in self.resampler.resample(frame)] or
                                 [np.zeros(0, np.float32)])
        if not self.active:
            self.driver = None
            self.context.append((stream_s, samples))
            while self.context and stream_s - self.context[0][0] > CONTEXT_S:
                self.context.pop(0)
            return out
        if self.driver is None:   # just activated: a new driver, primed with the voice just heard
            self.driver = SpeechDriver(self.model, self.rest_pose, self.fps)
            self.driver_origin_s = self.context[0][0] if self.context else stream_s
            if self.context:
                self.driver.push(np.concatenate([chunk for _, chunk in self.context]))   # the past: not sent
            self.context.clear()
        for t, pose, code in self.driver.push(samples):
            t += self.driver_origin_s
            index = int(round(t * self.fps))
            if index % self.send_every:
                continue
            capture_ms = int((self.start_s + t) * 1000) & 0xFFFFFFFF
            out.append(self.codec.encode(FrameFeatures(self.seq, capture_ms, pose, code, flags=FLAG_AUDIO)))
            self.seq = (self.seq + 1) & 0xFFFF
        return out


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
