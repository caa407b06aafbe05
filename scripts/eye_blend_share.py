"""How often does the receiver draw a closing eye where the real eye is open? For each clip (self-
reenactment as `callsynth eval` runs it: still = first frame, references collected as a call collects them,
15 packets a second, the warp), the share of the real open-eye frames (eye openness at or above 60 % of the
clip's median, as the evaluator counts blinks) on which the renderer blends in some closed-eye picture, and
more than half of one; and the share of the real blink frames blended more than half.

    python scripts/eye_blend_share.py [CLIP ...]      (default: the validation clips)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.eval.metrics import LandmarkStream
from callsynth.face.basis import load_basis
from callsynth.face.code import NO_CUE
from callsynth.face.regions import eye_openness
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames, read_still, video_info
from callsynth.reenact import reenact
from callsynth.split import eval_clips
from receiver.renderer import WarpRenderer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path)
    args = parser.parse_args()
    basis = load_basis(None)
    for clip in args.clips or eval_clips():
        weights = []

        class Watched(WarpRenderer):
            def compose(self, target, cue=NO_CUE):
                out = super().compose(target, cue)
                found = [self.blender._eye_area(target, eye, out.shape[0]) for eye in range(2)]
                weights.append(max([f[3] for f in found if f is not None], default=0.0))
                return out

        fps = video_info(clip).fps
        still = prepare_still(read_still(clip), source=f"{clip.name} first frame")
        crops = [crop for crop, _ in reenact(still, iter_frames(clip), fps, basis,
                                             renderers=lambda s: Watched(basis, s))]
        stream = LandmarkStream(fps)
        real = np.array([np.nan if lm is None else eye_openness(lm).mean() for lm in map(stream, crops)])
        stream.close()
        blink = real < 0.6 * np.nanmedian(real)
        opened = ~blink & np.isfinite(real)
        w = np.array(weights)
        shut = f"{np.mean(w[blink] > 0.5):.0%}" if blink.any() else "–"
        print(f"{clip.name}: of {opened.sum()} open-eye frames, {np.mean(w[opened] > 0):.0%} blended, "
              f"{np.mean(w[opened] > 0.5):.0%} over half; of {blink.sum()} blink frames {shut} over half")
    print(f"({cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
