"""Where the sender's frames and voice come from: a video file played at its own frame rate, a camera,
or an audio file / microphone for the Opus track. Every frame carries its capture time (wall clock, ms)."""

from __future__ import annotations

import asyncio
import fractions
import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callsynth.media import MediaError, iter_frames, video_info
from callsynth.sound_devices import RATE, SoundDeviceError, capture_process, use_system_alsa

AUDIO_RATE = RATE  # what a voice track gives, and what arecord is asked for
AUDIO_FRAME = 960  # 20 ms, what Opus packs


def wall_ms() -> int:
    """Capture clock shared by both ends on one machine (the wire carries it modulo 2**32)."""
    return int(time.time() * 1000)


class VideoFileSource:
    """Frames of a file, released at the file's own frame rate as if a camera were producing them."""

    def __init__(self, path: str | Path, max_frames: int | None = None):
        self.path = Path(path)
        self.info = video_info(self.path)      # MediaError for anything that is not a video
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

    Only the audio stream is decoded (aiortc's MediaPlayer would decode the video a second time)."""

    kind = "audio"

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{path}: cannot open for audio ({exc})") from exc
        if not self.container.streams.audio:
            self.container.close()
            raise MediaError(f"{path}: has no audio stream")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE,
                                           frame_size=AUDIO_FRAME)
        self.decoded = self._decode()
        self.start: float | None = None
        self.samples = 0

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
        frame = next(self.decoded, None)
        if frame is None:
            self.stop()
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
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


class ToolMicrophoneTrack(MediaStreamTrack):
    """The default microphone as alsa-utils' `arecord` gives it (callsynth.sound_devices): 20 ms frames
    of mono 16-bit PCM, read in a worker thread so the event loop never blocks on the device."""

    kind = "audio"

    def __init__(self, process):
        super().__init__()
        self.process = process
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microphone")
        self.samples = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        size = AUDIO_FRAME * 2
        data = await asyncio.get_running_loop().run_in_executor(self.reader, self.process.stdout.read, size)
        if not data or len(data) < size:
            code = await asyncio.get_running_loop().run_in_executor(self.reader, self._exit_code)
            if code:            # it failed (a device it opened late, then lost): said, the call goes on
                logging.getLogger("callsynth.send").warning(
                    "the microphone stopped (arecord, exit %s: %s); the call goes on without a voice", code,
                    getattr(self.process, "last_said", ""))
            self.stop()
            raise MediaStreamError
        frame = av.AudioFrame.from_ndarray(np.frombuffer(data, "<i2")[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, self.samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.samples += AUDIO_FRAME
        return frame

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
        self.reader.shutdown(wait=False)


def microphone_track() -> MediaStreamTrack:
    """The default microphone: through alsa-utils' `arecord` when installed (the system's ALSA, its
    plug-ins, a PipeWire or PulseAudio desktop's default device), else through PyAV's own ALSA library on
    the system's configuration (plain ALSA devices; aiortc's MediaPlayer on the input device)."""
    from aiortc.contrib.media import MediaPlayer

    try:
        process = capture_process()
    except SoundDeviceError as exc:
        raise MediaError(f"no microphone found ({exc}); use --audio FILE or none") from exc
    if process is not None:
        return ToolMicrophoneTrack(process)
    use_system_alsa()
    try:
        player = MediaPlayer("default", format="alsa")
    except Exception as exc:  # PyAV raises several kinds for a missing device
        raise MediaError(f"no microphone found (ALSA: {exc}); use --audio FILE or none") from exc
    if player.audio is None:
        raise MediaError("no microphone found (ALSA's default device gives no sound); use --audio FILE or none")
    return player.audio
