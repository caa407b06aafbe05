"""Reading and writing stills and videos through PyAV, with one clear error type for bad input."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .errors import reason

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MP4_SUFFIXES = (".mp4", ".m4v", ".mov")     # the MP4 family: fragmented as a call records (receiver/recorder.py)


class MediaError(ValueError):
    """A file that is missing, empty, or not a decodable image or video."""


@dataclass
class VideoInfo:
    fps: float
    frames: int | None
    width: int          # as stored: a phone's portrait video is stored sideways and read turned (_upright)
    height: int
    still: bool = False  # a picture (a JPEG, a PNG, a one-frame GIF): FFmpeg reads it as a video of one frame


def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not an image or video")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        with open(path, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp":      # an MP4 or MOV whose index never came: a copy or upload cut short
            raise MediaError(f"{path}: an MP4/MOV file that cannot be read, truncated perhaps (its index is "
                             f"missing or damaged: {reason(exc)})") from exc
        raise MediaError(f"{path}: not an image or video ({reason(exc)})") from exc


def video_info(path: str | Path) -> VideoInfo:
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        # FFmpeg's demuxers of single pictures are image2 and the *_pipe ones (jpeg_pipe, png_pipe, ...)
        still = container.format.name == "image2" or container.format.name.endswith("_pipe") or stream.frames == 1
        return VideoInfo(float(rate), stream.frames or None, stream.width, stream.height, still)


def moving_video_info(path: str | Path, advice: str = "") -> VideoInfo:
    """video_info of a file that must move: a camera's stand-in, a driving video. A picture there made a
    call of one frame, over as it began (a demo reported 42 fps over 0.04 s), or a render of one frame;
    MediaError instead, with `advice` (what to give) after it."""
    info = video_info(path)
    if info.still:
        raise MediaError(f"{path}: a still picture, not a video{advice}")
    return info


def iter_frames(path: str | Path, max_frames: int | None = None, threads: bool = True) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames; a file that decodes to nothing raises MediaError. `threads`: let the
    decoder use every core (offline); a live call's frame-by-frame source decodes on one."""
    for _, rgb in iter_timed_frames(path, max_frames, threads):
        yield rgb


def iter_timed_frames(path: str | Path, max_frames: int | None = None,
                      threads: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """iter_frames with each frame's presentation time (s, from the stream's own timestamps: what a player
    and the evaluator's mouth correlation go by, not the frame's index over a nominal rate)."""
    container = _open(path)
    count = 0
    try:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if threads else "NONE"
        rate = float(stream.average_rate or 25)     # for a frame without a timestamp
        orientation = _exif_orientation(Path(path))
        try:
            for frame in container.decode(stream):
                yield float(frame.time) if frame.time is not None else count / rate, _upright(frame, orientation)
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            if count == 0:
                raise MediaError(f"{path}: not an image or video (no picture in it decodes: {reason(exc)})") from exc
            # A truncated file: keep what decoded, stop cleanly.
    finally:
        container.close()
    if count == 0:
        raise MediaError(f"{path}: no decodable video frames")


# A picture stored as EXIF orientation N is shown after this turn/flip of its stored pixels (N: 2-8).
_EXIF_TO_UPRIGHT = {
    2: lambda a: a[:, ::-1],                         # mirrored
    3: lambda a: a[::-1, ::-1],                      # upside down
    4: lambda a: a[::-1],                            # upside down, mirrored
    5: lambda a: a.transpose(1, 0, 2),               # on its side, mirrored
    6: lambda a: np.rot90(a, 3),                     # on its side (turn a quarter clockwise)
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),   # on its other side, mirrored
    8: lambda a: np.rot90(a, 1),                     # on its other side
}


def _exif_orientation(path: Path) -> int:
    """An image file's EXIF orientation (1-8; 1 when it has none or is not an image Pillow reads). PyAV
    gives a frame's turn but not its flip: a mirrored orientation (2, 4, 5, 7) read as a turn alone gave
    an upside-down face, so an image's orientation is read from the file itself."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return 1
    try:
        from PIL import Image
        with Image.open(path) as image:
            orientation = int(image.getexif().get(0x0112, 1))
    except Exception:           # a format or EXIF block Pillow does not read: PyAV's turn stands
        return 1
    return orientation if orientation in _EXIF_TO_UPRIGHT else 1


def _upright(frame: av.VideoFrame, orientation: int = 1) -> np.ndarray:
    """A frame's RGB pixels as a player shows them: a phone stores a portrait picture or video sideways and
    says how to turn it (an image's EXIF orientation, `orientation`, flips included; a video's display
    matrix, which PyAV reads as `rotation`, degrees counter-clockwise). Read as stored, a phone's selfie
    drew a sideways face into the call."""
    rgb = frame.to_ndarray(format="rgb24")
    if orientation in _EXIF_TO_UPRIGHT:
        return np.ascontiguousarray(_EXIF_TO_UPRIGHT[orientation](rgb))
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def read_still(path: str | Path) -> np.ndarray:
    """The identity still: an image file, or the first frame of a video."""
    return next(iter_frames(path, max_frames=1))


@contextmanager
def written_whole(output: str | Path) -> Iterator[Path]:
    """A path beside `output` to write it at, moved onto `output` when the block ends and removed when the
    block raises (an error, Ctrl-C): a render stopped half way leaves no broken file under the output's
    name, and an earlier output stays whole until the new one is. Close what writes it inside the block."""
    output = Path(output)
    partial = output.with_name(f".{output.stem}.{os.getpid()}.partial{output.suffix}")
    try:                         # a place that cannot take the file is said now, before the work
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.touch()
    except OSError as exc:
        raise OSError(f"{output} cannot be written there ({exc.strerror})") from exc   # any cause: exit 1
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)


class VideoWriter:
    """H.264 mp4 writer for RGB frames (near-lossless, so that comparisons measure the method)."""

    def __init__(self, path: str | Path, fps: float, crf: int = 12):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._opened = False

    def write(self, rgb: np.ndarray) -> None:
        if not self._opened:
            self.stream.height, self.stream.width = rgb.shape[:2]
            self._opened = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self._opened:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SoundDropped:
    """How much sound a stream of audio frames dropped before each frame: the gap in their pts (a live
    microphone drops its oldest frames when the call falls behind: sender.capture.LiveMicrophone). Whatever
    keeps time by counting the samples it got must run its clock on over that (the echo canceller, the
    speech model's packets)."""

    def __init__(self):
        self.next_pts: int | None = None      # the pts the next frame has if none is dropped

    def __call__(self, frame: av.AudioFrame) -> Fraction:
        """Seconds dropped before `frame` (0 for the first, or for a frame without a time base)."""
        if frame.pts is None or frame.time_base is None:
            return Fraction(0)
        gap = 0 if self.next_pts is None else max(0, frame.pts - self.next_pts)
        self.next_pts = frame.pts + round(Fraction(frame.samples, frame.sample_rate) / frame.time_base)
        return gap * frame.time_base


def has_audio(path: str | Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


def _first_picture_s(container) -> float:
    """When a file's pictures begin (s): its sound's times count from there once the pictures are redrawn."""
    if not container.streams.video:
        return 0.0
    stream = container.streams.video[0]
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def mux_audio(video: str | Path, audio_source: str | Path, output: str | Path) -> None:
    """`video`'s pictures with `audio_source`'s sound (AAC, cut to the pictures' length) into `output`.
    `video`'s pictures stand for `audio_source`'s own from its first: the sound keeps its place against
    them (a call's recording whose voice began after its pictures), not moved to zero."""
    with av.open(str(video)) as pictures, av.open(str(audio_source)) as sound, \
            av.open(str(output), mode="w") as out:
        vin = pictures.streams.video[0]
        vout = out.add_stream_from_template(vin)
        ain = sound.streams.audio[0]
        rate = ain.codec_context.sample_rate or 48000
        aout = out.add_stream("aac", rate=rate)
        aout.layout = "mono" if ain.codec_context.channels == 1 else "stereo"
        end = float(vin.duration * vin.time_base) if vin.duration else None
        for packet in pictures.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)
        first = _first_picture_s(sound)
        resampler = av.AudioResampler(format="fltp", layout=aout.layout, rate=rate)
        at = None               # samples after the first picture where the next one plays
        for frame in sound.decode(ain):
            if frame.time is not None:      # a gap in the sound stays a gap
                own = round((frame.time - first) * rate)
                at = own if at is None else max(at, own)
            elif at is None:
                at = 0
            if end is not None and at > end * rate:
                break
            for chunk in resampler.resample(frame):
                drop = min(max(0, -at), chunk.samples)      # sound from before the first picture
                at += drop
                if drop == chunk.samples:
                    continue
                if drop:
                    chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.to_ndarray()[:, drop:]),
                                                       format="fltp", layout=aout.layout)
                chunk.sample_rate, chunk.pts, chunk.time_base = rate, at, Fraction(1, rate)
                at += chunk.samples
                for packet in aout.encode(chunk):
                    out.mux(packet)
        for packet in aout.encode():
            out.mux(packet)
