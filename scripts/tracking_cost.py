"""What the sender's tracking costs a frame on this CPU, and what it would cost another way: MediaPipe
asked for one face (what the sender does: the detector is skipped while the face is tracked) or for up to
four (the detector runs every frame), at full size or downscaled before MediaPipe; landmark difference
from full size with four faces, as % of the inter-ocular distance.

    python scripts/tracking_cost.py [CLIP ...] [--frames 120]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.face.tracker import FaceTracker, inter_ocular
from callsynth.machine import cpu_description
from callsynth.media import iter_frames
from callsynth.split import data_root

DEFAULT_CLIPS = ("video/hdtf/WDA_KatieHill_000.mp4", "video/pcavs/00067.mp4",
                 "video/grid_misc/1600ms_f1_s34_lbwh5n.mp4")


def run(frames: list, max_faces: int, scale: float) -> tuple[float, list]:
    out = []
    with FaceTracker(video=True, smoothing=False, max_faces=max_faces) as tracker:
        tracker.process(frames[0])                                  # MediaPipe's start-up
        start = time.perf_counter()
        for frame in frames:
            small = frame if scale == 1 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            result = tracker.process(small)
            out.append(None if not result.found else result.landmarks / scale)
        return (time.perf_counter() - start) * 1000 / len(frames), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--frames", type=int, default=120)
    args = ap.parse_args(argv)
    clips = args.clips or [data_root() / c for c in DEFAULT_CLIPS]
    print(f"on {cpu_description()}")
    for clip in clips:
        frames = list(iter_frames(clip, args.frames))
        base_ms, base = run(frames, 4, 1.0)
        print(f"{clip.name} ({frames[0].shape[1]}x{frames[0].shape[0]}, {len(frames)} frames): "
              f"4 faces, full size {base_ms:.1f} ms")
        for faces, scale in ((1, 1.0), (1, 0.75), (1, 0.5)):
            ms, marks = run(frames, faces, scale)
            diff = [np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean() / inter_ocular(b) * 100
                    for a, b in zip(marks, base) if a is not None and b is not None]
            print(f"  {faces} face, scale {scale:.2f}: {ms:.1f} ms, landmarks {np.mean(diff):.2f} % off, "
                  f"lost {sum(a is None for a in marks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
