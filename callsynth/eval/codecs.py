"""Ordinary video codecs through PyAV, in the real-time settings a call would use, at a target bitrate.

The bitrate reported is the one measured from the encoded packets, not the one asked for: at very low
targets the encoders cannot go that low, and the floor they reach is the point of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import os

import av
import numpy as np


@dataclass(frozen=True)
class CodecSpec:
    label: str
    encoder: str
    decoder: str
    options: dict


CODECS = {
    "x264": CodecSpec("H.264 (x264 veryfast, zerolatency)", "libx264", "h264",
                      {"preset": "veryfast", "tune": "zerolatency"}),
    "vp8": CodecSpec("VP8 (libvpx realtime)", "libvpx", "libvpx",
                     {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "qmax": "63"}),
    "vp9": CodecSpec("VP9 (libvpx realtime)", "libvpx-vp9", "libvpx-vp9",
                     {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "qmax": "63",
                      "row-mt": "1"}),
    "av1": CodecSpec("AV1 (SVT-AV1 preset 10, low delay)", "libsvtav1", "libdav1d",
                     {"preset": "10", "svtav1-params": "pred-struct=1:rc=2"}),
}
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder otherwise


def parse_codecs(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CODECS]
    if unknown:
        raise ValueError(f"unknown codec(s) {', '.join(unknown)}; choose from {', '.join(CODECS)}")
    return names


def encode_decode(frames: list[np.ndarray], fps: float, codec: str, kbps: float,
                  on_frame: Callable[[int, np.ndarray], None]) -> float:
    """Encode RGB frames at a target bitrate and decode them back, each decoded frame handed to
    `on_frame(index, rgb)` as it comes out (none are kept: a clip of minutes is gigabytes of them).
    Returns the measured kbps."""
    spec = CODECS[codec]
    h, w = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    enc = av.CodecContext.create(spec.encoder, "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = 1 / rate
    enc.framerate = rate
    enc.bit_rate = int(kbps * 1000)
    enc.gop_size = 10 ** 4  # one key frame, as a call would after its start
    enc.options = dict(spec.options)
    dec = av.CodecContext.create(spec.decoder, "r")
    total_bytes, decoded = 0, 0

    def give(frame):
        nonlocal decoded
        if decoded == len(frames):
            raise RuntimeError(f"{codec}: decoded more frames than the {len(frames)} encoded")
        on_frame(decoded, frame.to_ndarray(format="rgb24"))
        decoded += 1

    def take(packets):
        nonlocal total_bytes
        for packet in packets:
            total_bytes += packet.size
            for frame in dec.decode(packet):
                give(frame)

    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format="yuv420p")
        frame.pts = i
        take(enc.encode(frame))
    take(enc.encode(None))
    for frame in dec.decode(None):
        give(frame)
    if decoded != len(frames):
        raise RuntimeError(f"{codec}: decoded {decoded} of {len(frames)} frames")
    return total_bytes * 8 / (len(frames) / fps) / 1000
