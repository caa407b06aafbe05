"""The other side's voice out of this machine's loudspeaker: the system's default sound output, through
ALSA (PipeWire's and PulseAudio's ALSA devices included).

A call on screen showed the other person and played nothing: the voice went only into the recording. It is
played behind its arrival by the faces' playout delay at the time it starts (silence first, which the
device's buffer then keeps ahead of each frame): played as it arrived, the voice came before the face that
spoke it by that delay, and a voice ahead of the lips is noticed sooner than one behind them. The silence
also covers frames that come late; one later than that empties the buffer, and from then on the voice
plays as it arrives. A write blocks while the device's buffer is full, so the
writes run in a thread of their own beside the event loop; when the device falls behind by more than
SPEAKER_BACKLOG frames the oldest waiting frame is dropped (counted), never the call held or the voice
played ever later."""

from __future__ import annotations

import queue
import threading

import av
import numpy as np

from callsynth.media import use_system_alsa

SPEAKER_RATE = 48000
SPEAKER_BACKLOG = 25        # voice frames waiting for the device (20-60 ms each): about half a second


class Speaker:
    """The default sound output, opened now: raises av.FFmpegError or OSError when there is none."""

    def __init__(self, delay_ms: float = 0.0, device: str = "default"):
        use_system_alsa()
        self.container = av.open(device, mode="w", format="alsa")
        self.stream = self.container.add_stream("pcm_s16le", rate=SPEAKER_RATE, layout="mono")
        try:
            self.container.start_encoding()        # opens the device: one that is not there is said now
        except BaseException:
            self.container.close()
            raise
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=SPEAKER_RATE)
        self.frames = self.dropped = 0
        self.failure: str | None = None
        self.waiting: queue.Queue = queue.Queue(maxsize=SPEAKER_BACKLOG)
        self.delay_ms = max(0.0, float(delay_ms))
        self.thread = threading.Thread(target=self._play, name="speaker", daemon=True)
        self.thread.start()

    def add(self, frame: av.AudioFrame) -> None:
        """A received voice frame, to be played; never blocks."""
        while True:
            try:
                self.waiting.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.waiting.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _play(self) -> None:
        at = 0
        try:
            silence = int(SPEAKER_RATE * self.delay_ms / 1000)
            if silence:
                quiet = av.AudioFrame.from_ndarray(np.zeros((1, silence), np.int16), format="s16", layout="mono")
                quiet.sample_rate, quiet.pts, at = SPEAKER_RATE, 0, silence
                for packet in self.stream.encode(quiet):
                    self.container.mux(packet)
            while (frame := self.waiting.get()) is not None:
                for chunk in self.resampler.resample(frame):
                    chunk.pts, at = at, at + chunk.samples
                    for packet in self.stream.encode(chunk):
                        self.container.mux(packet)
                self.frames += 1
        except (av.FFmpegError, OSError, ValueError) as exc:     # the device went away mid-call
            self.failure = f"{type(exc).__name__}: {exc}"

    def close(self) -> dict:
        """Play what is waiting (at most the backlog), close the device; what was played, for STATS.json."""
        self.add(None)
        self.thread.join(timeout=2 + SPEAKER_BACKLOG * 0.06)
        try:
            if not self.thread.is_alive():
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
        return {"frames": self.frames, "dropped": self.dropped, "delay_ms": round(self.delay_ms, 1),
                "failure": self.failure}
