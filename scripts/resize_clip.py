"""A clip at another frame size, for timing the call on larger frames than ../shared/data holds (its 512²
clips last 8 s; the evaluating machine's demo clip was 512x480): each frame scaled to fit the height and
its sides mirrored out to the width, encoded with x264 at CRF 18, the frame rate kept.

    python scripts/resize_clip.py $CALLSYNTH_DATA/video/styletalk/Obama_clip2.mp4 /tmp/obama_512x480.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.media import iter_frames, video_info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="512x480", help="WIDTHxHEIGHT, even numbers (default 512x480)")
    parser.add_argument("--frames", type=int, default=720, help="at most this many frames (default 720)")
    args = parser.parse_args()
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: not WIDTHxHEIGHT: {args.size!r}")
    if width < 16 or height < 16 or width % 2 or height % 2:
        parser.error("--size: even numbers of at least 16")
    info = video_info(args.clip)
    with av.open(str(args.out), "w") as out:
        stream = out.add_stream("libx264", rate=round(info.fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        count = 0
        for frame in iter_frames(args.clip, args.frames):
            h, w = frame.shape[:2]
            side = min(width, round(w * height / h))
            scaled = cv2.resize(frame, (side, height), interpolation=cv2.INTER_CUBIC)
            left = (width - side) // 2
            scaled = cv2.copyMakeBorder(scaled, 0, 0, left, width - side - left, cv2.BORDER_REFLECT)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(scaled, format="rgb24")))
            count += 1
        out.mux(stream.encode(None))
    print(f"{args.out}: {count} frames, {width}x{height}, {info.fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
