"""Feature packets from the caller's voice: with the camera off, or while the camera sees no face, the
voice the call already sends also drives the face (packets flagged FLAG_AUDIO)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import av
from aiortc.mediastreams import MediaStreamTrack

from audio2exp.driver import SpeechDriver
from audio2exp.model import Audio2ExpModel
from callsynth.budget import sampled
from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import FaceCoder
from callsynth.face.pose import Pose
from callsynth.face.still import Still
from callsynth.media import SoundDropped
from callsynth.wire import CAPTURE_MASK, FLAG_AUDIO, Codec, FrameFeatures

log = logging.getLogger("callsynth.send")
CONTEXT_S = 2.0       # voice kept while the camera drives the face, to prime the model when it takes over
# The voice's head starts at the caller's pose as last sent when that was this recent (a camera turned off
# with the key, a face lost with --speech-after 0); later, the receiver has held the last pose for 0.5 s and
# eased it back to the still's at rest (receiver.playout.FeatureTimeline), and the voice starts there too.
FRESH_POSE_S = 0.5


class SpeechPackets:
    """Turns audio frames into packets at the call's packet rate; sends only while `active`.

    While inactive (the camera sees the face) only the last CONTEXT_S of the voice is kept; the model starts
    when the packets are needed, primed with that context, so a call with its camera on pays nothing for
    the fallback. The work runs in a worker thread of its own: on the event loop it held up everything
    else, the data channels included (the still took 1.1 s to cross loopback with the voice on, 34 ms
    without)."""

    def __init__(self, model: Audio2ExpModel, basis: ExpressionBasis, still: Still, fps: float,
                 send_every: float, send):
        self.model, self.rest_pose = model, FaceCoder(basis, still.landmarks).still_pose
        self.driver: SpeechDriver | None = None        # made when the packets are first needed
        self.driver_origin_s = 0.0                     # stream time of the driver's sample 0
        self.dropped = SoundDropped()                   # the voice's frames dropped before each
        self.context: deque = deque()                  # audio frames of the last CONTEXT_S while inactive
        self.restart = True                            # the next active frame starts a new driver
        self.codec = Codec(basis)
        self.fps, self.send_every, self.send = fps, send_every, send
        self.start_s: float | None = None   # wall time of the audio's sample 0
        self.active = False
        self.last_pose: tuple[Pose, float] | None = None   # the camera's last sent pose, and when (wall s)
        self.packets = 0
        self.payload_bytes = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def feed(self, frame: av.AudioFrame) -> None:
        """Called on the event loop for each audio frame. While inactive the frame is only kept (the last
        CONTEXT_S of them: resampling each in the worker cost 5 % of a two-way call's CPU for nothing);
        while active the work goes to the worker thread, in order, and the packets it makes are sent back
        on the loop."""
        self.loop = self.loop or asyncio.get_running_loop()
        if self.closed:
            return
        stream_s = float(frame.time or 0.0)
        if self.start_s is None:
            self.start_s = time.time() - stream_s
        if not self.active:
            self.context.append(frame)
            while self.context and stream_s - float(self.context[0].time or 0.0) > CONTEXT_S:
                self.context.popleft()
            self.restart = True
            return
        primer, start_pose = None, None
        if self.restart:      # just activated: a new driver, primed with the voice just heard
            primer, self.context, self.restart = list(self.context), deque(), False
            if self.last_pose is not None and time.time() - self.last_pose[1] <= FRESH_POSE_S:
                start_pose = self.last_pose[0]
        done = self.loop.run_in_executor(self.worker, self.packets_for, frame, primer, start_pose)
        done.add_done_callback(self._send_all)

    def _send_all(self, done: asyncio.Future) -> None:
        if done.cancelled() or self.closed:
            return          # made after close(): not sent, so what was counted is what went out
        if done.exception() is not None:
            log.warning("speech-driven face failed on one frame: %s", done.exception())
            return
        for packet in done.result():
            if self.send(packet) == "sent":
                self.packets += 1
                self.payload_bytes += len(packet)

    def close(self) -> None:
        self.closed = True
        self.worker.shutdown(wait=False, cancel_futures=True)

    def packets_for(self, frame: av.AudioFrame, primer: list | None = None,
                    start_pose: Pose | None = None) -> list[bytes]:
        """The packets this audio frame completes; runs in the worker thread. `primer`: the frames heard
        while inactive, given on the first frame after activation (a new driver is primed with them;
        their packets are the past and are not sent). `start_pose`: where the new driver's head starts
        (SpeechDriver.start_from), from the frame after the primer on."""
        out = []
        stream_s = float(frame.time or 0.0)
        dropped = self.dropped(frame)
        if primer is not None or self.driver is None:
            self.driver = SpeechDriver(self.model, self.rest_pose, self.fps)
            primer = primer or []
            self.driver_origin_s = float(primer[0].time or 0.0) if primer else stream_s
            self.driver.push_frames(primer)
            if start_pose is not None:
                self.driver.start_from(start_pose)
        elif dropped:
            # the microphone's frames dropped before it (the call fell behind): the face's time runs on over
            # them (counted without them, every packet after was stamped that much earlier than its voice
            # was heard)
            self.driver_origin_s += float(dropped)
        for t, pose, code in self.driver.push_frame(frame):
            t += self.driver_origin_s
            index = int(round(t * self.fps))
            if not sampled(index, self.send_every):
                continue
            capture_ms = int((self.start_s + t) * 1000) & CAPTURE_MASK
            out.append(self.codec.encode(FrameFeatures(capture_ms, pose, code, flags=FLAG_AUDIO)))
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
