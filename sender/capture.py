"""Where the sender's frames and voice come from: a video file played at its own frame rate, a camera,
or an audio file / microphone for the Opus track. Every frame carries its capture time (wall clock, ms)."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import logging
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Iterator

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callsynth.errors import reason
from callsynth.media import MediaError, iter_frames, moving_video_info
from callsynth.sound_devices import RATE, SoundDeviceError, capture_process, use_system_alsa

AUDIO_RATE = RATE  # what a voice track gives, and what arecord is asked for
AUDIO_FRAME = 960  # 20 ms, what Opus packs
STALE_S = 0.4     # the most microphone sound that waits for the call: older is dropped (LiveMicrophone)
AHEAD_S = 0.2     # the most a microphone is read ahead of the clock (a real one never is, but by its drift)
# what to give instead of a picture as the camera's stand-in (--video of send, call and demo)
CAMERA_ADVICE = (": give a video to play as the camera (a picture of the caller is --identity; with --camera-off "
                 "and --audio the voice moves it)")


def wall_ms() -> int:
    """Capture clock shared by both ends on one machine (the wire carries it modulo 2**32)."""
    return int(time.time() * 1000)


class VideoFileSource:
    """Frames of a file, released at the file's own frame rate as if a camera were producing them."""

    def __init__(self, path: str | Path, max_frames: int | None = None):
        self.path = Path(path)
        # MediaError for anything that is not a video, a picture included
        self.info = moving_video_info(self.path, CAMERA_ADVICE)
        self.fps = self.info.fps
        self.max_frames = max_frames
        self.dropped = 0

    def first_frames(self, seconds: float) -> list[np.ndarray]:
        return list(iter_frames(self.path, max(1, int(round(seconds * self.fps)))))

    async def frames(self, start: float | None = None) -> AsyncIterator[tuple[np.ndarray, int]]:
        """Each frame at its time, stamped with that time (when a camera would have taken it: a frame the
        busy call takes up late has waited, as a camera's frame waits in its driver, and glass to glass
        counts the wait); like a camera, a frame whose time passed by more than a frame period while the
        call was busy is dropped (`dropped` counts them): a sender that cannot keep up stays in real time
        instead of playing the clip ever later. The next frame is decoded in a thread while this one is
        used, as a camera's driver would deliver it: decoded in the call's event loop, a 512² frame held
        the loop 3 ms a frame on a 2-core EPYC."""
        start = time.time() if start is None else start
        self.dropped = 0
        loop = asyncio.get_running_loop()
        decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        decoded = iter_frames(self.path, self.max_frames, threads=False)
        try:
            upcoming = loop.run_in_executor(decoder, next, decoded, None)
            index = 0
            while (frame := await upcoming) is not None:
                upcoming = loop.run_in_executor(decoder, next, decoded, None)
                due = start + index / self.fps
                index += 1
                delay = due - time.time()
                if delay < -1.0 / self.fps:
                    self.dropped += 1
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
                yield frame, int(due * 1000)
        finally:
            decoder.submit(decoded.close)       # after any decoding still running
            decoder.shutdown(wait=False)


class CameraSource:
    """An OpenCV camera, read in a worker thread so the call's event loop never blocks on it."""

    def __init__(self, index: int, fps: float = 30.0):
        import cv2

        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # its backends' probing, said below
        try:
            self.capture = cv2.VideoCapture(index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self.capture.isOpened():
            raise MediaError(f"camera {index}: cannot be opened (is one connected, and free?)")
        self.capture.set(cv2.CAP_PROP_FPS, fps)
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or fps

    def _read(self) -> np.ndarray | None:
        ok, bgr = self.capture.read()
        return np.ascontiguousarray(bgr[:, :, ::-1]) if ok else None

    def first_frames(self, seconds: float) -> list[np.ndarray]:
        frames = [self._read() for _ in range(max(1, int(seconds * self.fps)))]
        return [f for f in frames if f is not None]

    async def frames(self, start: float | None = None) -> AsyncIterator[tuple[np.ndarray, int]]:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await loop.run_in_executor(None, self._read)
                if frame is None:
                    return
                yield frame, wall_ms()
        finally:
            self.capture.release()


class FileAudioTrack(MediaStreamTrack):
    """The audio of a file as an aiortc track, 20 ms frames paced in real time from `start`.

    Only the audio stream is decoded (aiortc's MediaPlayer would decode the video a second time). Beside a
    VideoFileSource of the same call the file's sound is `hold`-en (silence goes) until `begin`, when its
    pictures begin: the voice started with the first RTP frame, the pictures once the still was through, so
    the voice led the lips by the still's delivery (26 ms on loopback; 10 s through a 16 kbit/s policer)."""

    kind = "audio"

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{path}: cannot open for audio ({reason(exc)})") from exc
        if not self.container.streams.audio:
            self.container.close()
            raise MediaError(f"{path}: has no audio stream")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE,
                                           frame_size=AUDIO_FRAME)
        self.decoded = self._decode()
        first = next(self.decoded, None)        # a stream of no sound is said now, not as a call that stops
        if first is None:
            self.container.close()
            raise MediaError(f"{path}: its audio stream holds no sound")
        self.decoded = itertools.chain([first], self.decoded)
        self.start: float | None = None
        self.samples = 0
        self.held = False

    def hold(self) -> None:
        """Silence until `begin`."""
        self.held = True

    def begin(self, at: float) -> None:
        """The file's sound from `at` (time.time()), as its pictures."""
        if self.held:
            self.held = False
            self.start = at - self.samples / AUDIO_RATE

    def _decode(self):
        try:
            for frame in self.container.decode(self.container.streams.audio[0]):
                yield from self.resampler.resample(frame)
        except av.error.FFmpegError:
            pass  # a damaged tail: the call keeps what decoded
        yield from self.resampler.resample(None)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        if self.held:
            frame = av.AudioFrame.from_ndarray(np.zeros((1, AUDIO_FRAME), np.int16), format="s16", layout="mono")
        elif (frame := next(self.decoded, None)) is None:
            self.stop()
            raise MediaStreamError
        frame.pts = self.samples
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.samples += frame.samples
        delay = self.start + frame.pts / AUDIO_RATE - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return frame

    def stop(self) -> None:
        super().stop()
        self.container.close()


class LiveMicrophone(MediaStreamTrack):
    """A microphone's frames (mono 16-bit), captured in real time by a thread of their own (`_frames`, a
    subclass's) and waiting for the call to take them. At most STALE_S of them wait: a call that falls
    behind (a busy machine: the echo canceller, the Opus encoder and the event loop wait their turn) takes
    the newest sound, and the older is dropped and counted (`dropped`; sound from before the call first
    takes a frame goes uncounted: not late, only from before the call). Its frames' pts count the samples
    captured, dropped ones included, so a drop shows as a gap (callsynth.echo keeps its clock by it); the
    voice as sent runs on without one (sender.stream.MutableAudioTrack). Once unbounded, a loaded two-way
    call's microphone fell 2.7 s behind and sent 265 of 400 frames before its 8 s call ended."""

    kind = "audio"

    def __init__(self, rate: int = AUDIO_RATE):
        super().__init__()
        self.rate = rate
        self.waiting: deque = deque()            # (pts, samples); None once the source has ended
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.arrived: asyncio.Event | None = None   # set (in the call's loop) when a frame is put
        self.dropped = 0
        self.captured = 0                        # samples captured so far
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def _frames(self) -> Iterator[np.ndarray]:
        """The microphone's frames as they are captured (blocking); returns when it ends."""
        raise NotImplementedError

    def start_capture(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._capture, name="microphone", daemon=True)
            self.thread.start()

    def _capture(self) -> None:
        origin = time.monotonic()
        try:
            for pcm in self._frames():
                if self.stopping.is_set():
                    break
                self._put((self.captured, pcm))
                self.captured += pcm.size
                # a source faster than the clock (ALSA's file plug-in where there is no sound card gives its
                # file as fast as it is read) is read at the clock's pace, as a microphone gives sound
                ahead = origin + self.captured / self.rate - time.monotonic()
                if ahead > AHEAD_S:
                    self.stopping.wait(ahead - AHEAD_S)
        finally:
            self._put(None)

    def _put(self, item) -> None:
        with self.lock:
            if item is not None:
                while self.waiting and len(self.waiting) * item[1].size >= STALE_S * self.rate:
                    self.waiting.popleft()
                    self.dropped += self.loop is not None    # (sound from before the call took any: not late)
            self.waiting.append(item)
            loop, arrived = self.loop, self.arrived
        if loop is not None:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:             # the call's loop has closed: nobody is waiting
                pass

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.arrived is None:
            with self.lock:
                self.loop, self.arrived = asyncio.get_running_loop(), asyncio.Event()
            self.start_capture()
        while True:
            with self.lock:
                if self.waiting:
                    got = self.waiting.popleft()
                    break
                self.arrived.clear()
            await self.arrived.wait()
        if got is None:
            self.stop()
            raise MediaStreamError
        pts, pcm = got
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, pts, fractions.Fraction(1, self.rate)
        return frame

    def stop(self) -> None:
        super().stop()
        self.stopping.set()


class ToolMicrophoneTrack(LiveMicrophone):
    """The default microphone as alsa-utils' `arecord` gives it (callsynth.sound_devices): 20 ms frames
    of mono 16-bit PCM, read from its start by the capture thread (the pipe never fills, so arecord never
    overruns, and the event loop never blocks on the device)."""

    def __init__(self, process):
        super().__init__(AUDIO_RATE)
        self.process = process
        self.start_capture()

    def _frames(self) -> Iterator[np.ndarray]:
        size = AUDIO_FRAME * 2
        while True:                        # (until it ends, or _capture stops taking frames)
            data = self.process.stdout.read(size)
            if not data or len(data) < size:
                break
            yield np.frombuffer(data, "<i2")
        code = self._exit_code()
        if code and not self.stopping.is_set():   # it failed (a device it opened late, then lost): said
            logging.getLogger("callsynth.send").warning(
                "the microphone stopped (arecord, exit %s: %s); the call goes on without a voice", code,
                getattr(self.process, "last_said", ""))

    def _exit_code(self) -> int | None:
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None
        self.process.listener.join(timeout=1)       # its last words, read to the end of its stderr
        return code

    def stop(self) -> None:
        super().stop()
        if self.process.poll() is None:
            self.process.kill()


def no_microphone(why: str) -> MediaError:
    """What a caller who asked for the microphone is told when there is none, and what to do instead."""
    return MediaError(f"no microphone found ({why}); use --audio FILE or none")


class LibraryMicrophoneTrack(LiveMicrophone):
    """The default microphone through PyAV's own ALSA library (its wheel's), where `arecord` is missing:
    the system's configuration, plain ALSA devices. Decoded and cut into 20 ms mono frames by the capture
    thread."""

    def __init__(self):
        super().__init__(AUDIO_RATE)
        use_system_alsa()
        try:
            self.container = av.open("default", format="alsa")
        except Exception as exc:  # noqa: BLE001 - PyAV raises several kinds for a missing device
            raise no_microphone(f"ALSA: {exc}") from exc
        if not self.container.streams.audio:
            self.container.close()
            raise no_microphone("ALSA's default device gives no sound")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE, frame_size=AUDIO_FRAME)
        self.start_capture()

    def _frames(self) -> Iterator[np.ndarray]:
        try:
            for frame in self.container.decode(self.container.streams.audio[0]):
                for part in self.resampler.resample(frame):
                    yield part.to_ndarray().reshape(-1)
        except (av.error.FFmpegError, OSError) as exc:
            if not self.stopping.is_set():
                logging.getLogger("callsynth.send").warning(
                    "the microphone stopped (ALSA: %s); the call goes on without a voice", reason(exc))
        finally:
            self.container.close()


def microphone_track() -> MediaStreamTrack:
    """The default microphone: through alsa-utils' `arecord` when installed (the system's ALSA, its
    plug-ins, a PipeWire or PulseAudio desktop's default device), else through PyAV's own ALSA library on
    the system's configuration (plain ALSA devices). Either way a LiveMicrophone: the newest STALE_S waits
    for the call."""
    try:
        process = capture_process()
    except SoundDeviceError as exc:
        raise no_microphone(str(exc)) from exc
    if process is not None:
        return ToolMicrophoneTrack(process)
    return LibraryMicrophoneTrack()
