"""How far does the rebuilt mouth open against the real one? For each clip (self-reenactment as `callsynth
eval` runs it: still = first frame, 15 packets a second, the warp), on the real open-mouth frames (lip gap
at or above OPEN_MOUTH of the iris distance, the evaluator's landmarks), the mean lip gap of:

- truth: the evaluator's landmarks on the real frame;
- code alone: the sender's tracked landmarks (video mode, as the call tracks), pose-free, put through the
  expression basis and back, unquantised (what the K coefficients keep of the opening);
- call: the landmarks the receiver draws the frame at (code, wire, playout, smoothing, all of it);

and the call's mean error against the truth. The basis's average mouth opens unlike some callers': on a
face it fits badly the code parts the lips a third less (or a fifth more) than the person does.

    python scripts/lip_gap_bias.py [CLIP ...]      (default: the validation clips)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.eval.metrics import LandmarkStream
from callsynth.face.basis import load_basis
from callsynth.face.code import NO_CUE, FaceCoder
from callsynth.face.crop import CROP_SIZE
from callsynth.face.landmark_cache import track_file
from callsynth.face.regions import OPEN_MOUTH, lip_gap
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames, read_still, video_info
from callsynth.reenact import reenact
from callsynth.split import eval_clips
from receiver.renderer import WarpRenderer


def code_alone(clip: Path, basis) -> tuple[float, float]:
    """(mean real, mean coded) pose-free lip gap on the clip's open-mouth frames, from the cached
    tracking of the whole clip, still = its first tracked frame."""
    tracked = track_file(clip)["landmarks"]
    frames = tracked[~np.isnan(tracked).any(axis=(1, 2))].astype(np.float64)
    coder = FaceCoder(basis, frames[0])
    real, coded = [], []
    for landmarks in frames:
        pose, code = coder.encode(landmarks)
        canonical = pose.to_canonical(landmarks / CROP_SIZE)
        real.append(lip_gap(canonical))         # pose-free: the face seen from the front
        coded.append(lip_gap(coder.still_canonical + basis.expand(code)))
    real, coded = np.array(real), np.array(coded)
    opened = real >= OPEN_MOUTH
    return (float(real[opened].mean()), float(coded[opened].mean())) if opened.any() else (np.nan, np.nan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path)
    args = parser.parse_args()
    basis = load_basis(None)
    print("clip | open frames | truth | call | call − truth | code alone: real / coded (pose-free)")
    for clip in args.clips or eval_clips():
        targets = []

        class Watched(WarpRenderer):
            def compose(self, target, cue=NO_CUE):
                targets.append(np.array(target))
                return super().compose(target, cue)

        fps = video_info(clip).fps
        still = prepare_still(read_still(clip), source=f"{clip.name} first frame")
        crops = [crop for crop, _ in reenact(still, iter_frames(clip), fps, basis,
                                             renderers=lambda s: Watched(basis, s))]
        stream = LandmarkStream(fps)
        pairs = [(lip_gap(lm), lip_gap(t)) for lm, t in zip(map(stream, crops), targets) if lm is not None]
        stream.close()
        gaps = np.array(pairs)
        opened = gaps[:, 0] >= OPEN_MOUTH
        real, coded = code_alone(clip, basis)
        if not opened.any():
            print(f"{clip.name} | 0 | – | – | – | {real:.3f} / {coded:.3f}")
            continue
        truth, call = gaps[opened].mean(0)
        print(f"{clip.name} | {opened.sum()} | {truth:.3f} | {call:.3f} | {call - truth:+.3f} "
              f"({(call - truth) / truth:+.0%}) | {real:.3f} / {coded:.3f}")
    print(f"({cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
