"""The other side's voice out of this machine's loudspeaker: the system's default sound output
(callsynth.sound_devices: alsa-utils' `aplay` when installed, else the ALSA library inside PyAV).

A call on screen showed the other person and played nothing: the voice went only into the recording. It is
played as it arrives, behind SPEAKER_CUSHION_MS of silence written first, which the device's buffer then
keeps ahead of each frame: a frame that comes a little late plays on time instead of leaving a click of
silence (one later than that empties the cushion, and from then on the voice plays as it arrives); a
frame lost on the way is played as silence of its length, so losses do not eat the cushion. On
loopback the voice arrives about as far behind its sending as the face is shown behind its capture (`python
scripts/voice_face_sync.py`: 43 against 46 ms; within `--budget 24`, 72 against 132 ms, the face's
packets bundling several frames' codes; 2-core AMD EPYC at 2.6 GHz), so the cushion puts the voice a little
behind the lips, or a little ahead within a budget, before what the sound device adds (not measured: this
machine has none). The device is opened and written in a thread of its own (a write blocks while the
device's buffer is full; opening one takes up to a third of a second), never on the call's event loop;
when the device falls behind by more than SPEAKER_BACKLOG frames the oldest waiting frame is dropped
(counted), never the call held or the voice played ever later. Voice that comes in a burst (the frames that
waited while the device opened, a third of a second; a link that stalled and caught up) would stay queued at
the device and put the voice that far behind the face for the rest of the call: a frame that would sit
behind more than the cushion and SPEAKER_LATE_MS of queued sound is skipped (counted as `late_ms_skipped`)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import av
import numpy as np

from callsynth.sound_devices import RATE, SoundDeviceError, playback_process, use_system_alsa

SPEAKER_BACKLOG = 25        # voice frames waiting for the device (20-60 ms each): about half a second
SPEAKER_CUSHION_MS = 40.0   # silence played first, which stays ahead of every frame (above)
SPEAKER_LATE_MS = 60.0      # voice queued at the device beyond the cushion by more than this: frames skipped
GAP_FILLED_S = 0.5          # a longer jump in the voice's timestamps is a new start, not a loss


class _ToolOutput:
    """Raw PCM into `aplay`'s stdin."""

    name = "aplay"

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def write(self, pcm: np.ndarray) -> None:
        try:
            self.process.stdin.write(pcm.tobytes())
        except (BrokenPipeError, ValueError) as exc:
            said = getattr(self.process, "last_said", "")
            raise SoundDeviceError(f"aplay stopped (exit {self.process.poll()}{': ' + said if said else ''})") from exc

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


class _LibraryOutput:
    """PyAV's ALSA output device (its own ALSA library, the system's configuration)."""

    name = "ALSA"

    def __init__(self, device: str):
        use_system_alsa()
        self.container = av.open(device, mode="w", format="alsa")
        self.stream = self.container.add_stream("pcm_s16le", rate=RATE, layout="mono")
        try:
            self.container.start_encoding()        # opens the device: one that is not there is said now
        except BaseException:
            self.container.close()
            raise
        self.at = 0

    def write(self, pcm: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, self.at = RATE, self.at, self.at + pcm.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class Speaker:
    """Plays voice frames (add) on the default sound output, opened in its own thread: until it is open
    `opened` is unset, and when it cannot be `failure` says why. `echo` (callsynth.echo.EchoCanceller) is
    handed every sample as it goes to the device, to take its echo out of this side's microphone."""

    def __init__(self, cushion_ms: float = SPEAKER_CUSHION_MS, device: str = "default", echo=None):
        self.cushion_ms, self.device, self.echo = max(0.0, float(cushion_ms)), device, echo
        self.echo_failure: str | None = None
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self.frames = self.dropped = 0
        self.filled_ms = self.skipped_ms = 0.0
        self.played_until: float | None = None   # when (monotonic) the device will have played what it was given
        self.failure: str | None = None
        self.output = None
        self.opened = threading.Event()
        self.waiting: queue.Queue = queue.Queue(maxsize=SPEAKER_BACKLOG)
        self.thread = threading.Thread(target=self._play, name="speaker", daemon=True)
        self.thread.start()

    @property
    def through(self) -> str | None:
        """What plays the voice ('aplay' or 'ALSA'), once opened."""
        return None if self.output is None else self.output.name

    def add(self, frame: av.AudioFrame | None) -> None:
        """A received voice frame, to be played (None: the end); never blocks."""
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

    def _open(self):
        process = playback_process(self.device, start_ms=self.cushion_ms)
        return _LibraryOutput(self.device) if process is None else _ToolOutput(process)

    def _play(self) -> None:
        output = None
        try:
            output = self.output = self._open()
            self.opened.set()
            self._write(output, np.zeros(int(RATE * self.cushion_ms / 1000), np.int16))
            following = None        # the RTP time (48 kHz) the next frame should start at
            while (frame := self.waiting.get()) is not None:
                if frame.pts is not None and frame.sample_rate == RATE:
                    # a frame lost on the way (given up by voice_jitter) leaves its time as silence:
                    # played shorter, the voice would eat into the cushion with every loss
                    missing = 0 if following is None else (frame.pts - following) % (1 << 32)
                    if 0 < missing <= RATE * GAP_FILLED_S:
                        self._write(output, np.zeros(missing, np.int16))
                        self.filled_ms += missing * 1000 / RATE
                    following = (frame.pts + frame.samples) % (1 << 32)
                if self._queued_ms() > self.cushion_ms + SPEAKER_LATE_MS:
                    self.skipped_ms += frame.samples * 1000 / frame.sample_rate
                    continue
                for chunk in self.resampler.resample(frame):
                    self._write(output, chunk.to_ndarray().reshape(-1))
                self.frames += 1
        except (av.FFmpegError, OSError, ValueError) as exc:      # no device, or it went away mid-call
            self.failure = str(exc) if isinstance(exc, SoundDeviceError) else f"{type(exc).__name__}: {exc}"
        finally:
            self.opened.set()
            if output is not None:
                try:
                    output.close()
                except (av.FFmpegError, OSError, ValueError):
                    pass

    def _queued_ms(self) -> float:
        """Sound given to the device and not yet played, by the clock (the device plays in real time)."""
        return 0.0 if self.played_until is None else max(0.0, self.played_until - time.monotonic()) * 1000

    def _write(self, output, pcm: np.ndarray) -> None:
        if self.echo is not None:          # before the write, which may wait for room: the reference leads
            try:
                self.echo.played(pcm)
            except Exception as exc:  # noqa: BLE001 - the voice plays on, its echo no longer cancelled
                self.echo_failure, self.echo = f"{type(exc).__name__}: {exc}", None
        now = time.monotonic()     # a device that ran dry starts again from now
        self.played_until = max(now, self.played_until or now) + pcm.size / RATE
        output.write(pcm)

    def close(self) -> dict:
        """Play what is waiting (at most the backlog), close the device; what was played, for STATS.json."""
        self.add(None)
        self.thread.join(timeout=2 + SPEAKER_BACKLOG * 0.06)
        underruns = getattr(getattr(self.output, "process", None), "underruns", None)
        return {"through": self.through, "frames": self.frames, "dropped": self.dropped, "underruns": underruns,
                "lost_ms_filled": round(self.filled_ms, 1), "late_ms_skipped": round(self.skipped_ms, 1),
                "cushion_ms": round(self.cushion_ms, 1), "failure": self.failure,
                **({"echo_failure": self.echo_failure} if self.echo_failure else {})}
