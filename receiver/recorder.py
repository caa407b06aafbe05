"""Recording what the receiver shows, with the audio it received, into one MP4 (PyAV).

Both streams are stamped by wall-clock arrival relative to the recording's start, so picture and voice
stay as much in step in the file as they were on screen.

The MP4 is fragmented (a fragment a second): a plain MP4 is unreadable until its index is written at the
end, so a receiver killed mid-call (the power, the OOM killer, SIGKILL) lost the whole recording; a
fragmented one keeps all but its last second (a test kills one). Its header is written with the first
fragment (`delay_moov`), not before any frame (`empty_moov`): a header written before the first frame
cannot say where each stream starts, so FFmpeg began both at zero. A voice that began 0.5 s after the
pictures then played 0.5 s early, and the AAC encoder's 21 ms of priming put every picture after the first
21 ms late.

A live call records through `RecordingThread`: the encoders run beside the event loop, not on it."""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from callsynth.media import MP4_SUFFIXES

AUDIO_RATE = 48000
RECORDING_BACKLOG = 160    # pictures and voice frames (about 2 s of a call) waiting before the recording skips
FRAGMENTED = {"movflags": "+frag_keyframe+delay_moov+default_base_moof", "frag_duration": "1000000"}


class CallRecorder:
    def __init__(self, path: str | Path, start_s: float, with_audio: bool, size: int = 256,
                 fps: float = 30.0):
        """MP4 streams are fixed before the first frame, so whether audio comes must be known now."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start_s = start_s
        mp4 = self.path.suffix.lower() in MP4_SUFFIXES     # Matroska is written as it goes
        self.container = av.open(str(self.path), mode="w", options=FRAGMENTED if mp4 else {})
        self.video = self.container.add_stream("libx264", rate=int(round(fps)))
        self.video.width = self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = Fraction(1, 1000)
        self.video.codec_context.time_base = Fraction(1, 1000)
        # ultrafast on one thread: the recording shares the call's CPU (veryfast with x264's own threads
        # took 5 % of a two-way call's samples on a 2-core EPYC)
        self.video.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}
        self.video.codec_context.thread_count = 1
        self.audio = self.resampler = None
        if with_audio:
            self.audio = self.container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            # FFmpeg's fast AAC coder: 0.18 ms a 20 ms frame where its default took 0.43 (a 2-core EPYC),
            # on the call's event loop
            self.audio.options = {"aac_coder": "fast"}
            self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        self.audio_next_pts: int | None = None
        self.last_video_pts = -1
        self.frames = 0

    def add_video(self, rgb: np.ndarray, wall_s: float) -> None:
        pts = max(self.last_video_pts + 1, int(round((wall_s - self.start_s) * 1000)))
        self.last_video_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts
        frame.time_base = Fraction(1, 1000)
        self.container.mux(self.video.encode(frame))
        self.frames += 1

    def add_audio(self, frame: av.AudioFrame, wall_s: float) -> None:
        if self.audio is None:
            return
        arrival_pts = int(round((wall_s - self.start_s) * AUDIO_RATE))
        for out in self.resampler.resample(frame):
            if self.audio_next_pts is None or arrival_pts - self.audio_next_pts > AUDIO_RATE // 2:
                self.audio_next_pts = max(arrival_pts - out.samples, self.audio_next_pts or 0)
            out.pts = self.audio_next_pts
            out.time_base = Fraction(1, AUDIO_RATE)
            self.audio_next_pts += out.samples
            self.container.mux(self.audio.encode(out))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()


class RecordingThread:
    """A CallRecorder fed from the call's event loop and encoding in a thread of its own.

    On the loop, x264 and AAC took 0.5-1.4 ms a picture (a 2-core EPYC), time the loop's packets and
    frames waited behind; PyAV lets go of the GIL while it encodes, so here they run beside the loop.
    Each frame is stamped when it is handed over, so the file keeps the call's timing. A machine too slow
    for the encoder makes the recording skip frames (`dropped`, by kind), never the call wait or its
    memory grow; an encoder that fails (a full disk) ends the recording, not the call (`error`)."""

    def __init__(self, recorder: CallRecorder, backlog: int = RECORDING_BACKLOG):
        self.recorder = recorder
        self.path = recorder.path
        self.frames = 0                   # pictures handed over and not dropped
        self.dropped = {"video": 0, "audio": 0}
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue(backlog)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add_video(self, rgb: np.ndarray, wall_s: float) -> None:
        # a copy: the caller may draw on its frame after handing it over
        if self._put(("video", np.array(rgb), wall_s)):
            self.frames += 1

    def add_audio(self, frame: av.AudioFrame, wall_s: float) -> None:
        self._put(("audio", frame, wall_s))

    def _put(self, item) -> bool:
        if self.error is not None:
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped[item[0]] += 1
            return False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue                  # failed: drain until close
            kind, data, wall_s = item
            try:
                (self.recorder.add_video if kind == "video" else self.recorder.add_audio)(data, wall_s)
            except Exception as exc:      # noqa: BLE001 - the disk, the encoder: the call goes on
                self.error = exc
        try:
            self.recorder.close()
        except Exception as exc:          # noqa: BLE001
            self.error = self.error or exc

    def close(self, timeout_s: float = 30.0) -> bool:
        """Encode what waits, finish the file; False when that did not end within `timeout_s`."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return False
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
