"""How low could the mouth-interior error go by drawing the interior from a picture of the caller, as the
reference stills do? For one clip (self-reenactment, still = first frame, references collected as a call
collects them, 15 packets a second, the warp), on the real open-mouth frames, the mean absolute error
inside the real inner-lip outline (0-255, as `callsynth eval` and face_metrics.py define it) of:

- output: what the receiver drew;
- best reference: each frame's interior from whichever reference it held then (or the still) gave the
  least error, chosen knowing the truth (the most a better choice among the same pictures could give);
- best earlier frame: the same, choosing among every real frame at least 15 frames earlier (every 3rd),
  as if every past moment had been sent;
- the frame itself, to the coded landmarks: the real frame's own interior warped to the landmarks the
  code gave (perfect content: what is left is geometry: code, quantisation, frames between packets);
- the frame itself, to its own landmarks: what the blend alone costs.

    python scripts/mouth_bounds.py CLIP [--max-frames N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.eval.metrics import LandmarkStream
from callsynth.face.basis import load_basis
from callsynth.face.code import NO_CUE
from callsynth.face.reference_blend import Reference, draw_mouth
from callsynth.face.regions import INNER_LIPS, OPEN_MOUTH, lip_gap, polygon_mask
from callsynth.face.still import Still, prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames, video_info
from callsynth.reenact import reenact
from receiver.renderer import WarpRenderer


def interior_error(made: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> float:
    mask = polygon_mask(real.shape, landmarks[INNER_LIPS]) > 0.5
    return float(np.abs(made[mask].astype(np.float32) - real[mask].astype(np.float32)).mean())


def mouth_from(source: Reference, base: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`base` with its mouth interior drawn from `source`'s picture, as ReferenceBlender draws it."""
    return draw_mouth(base.copy(), target, source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args()
    fps = video_info(args.clip).fps
    frames = list(iter_frames(args.clip, args.max_frames))
    still = prepare_still(frames[0], source=f"{args.clip.name} first frame")
    basis = load_basis(None)
    targets, refs = [], []                     # refs: (first frame index it is used at, still)

    class Recording(WarpRenderer):
        def add_reference(self, index, ref):
            refs.append((len(targets), index, ref))
            super().add_reference(index, ref)

        def compose(self, target, cue=NO_CUE):
            targets.append(np.array(target))
            return super().compose(target, cue)

    pairs = list(reenact(still, frames, fps, basis, renderers=lambda s: Recording(basis, s)))
    truth, outs = [r for r, _ in pairs], [o for _, o in pairs]
    stream = LandmarkStream(fps)
    real_lm = [stream(r) for r in truth]
    stream.close()
    still_source = Reference.of(0, still)
    sources = [(at, index, Reference.of(index, ref)) for at, index, ref in refs]   # each measured once
    frame_sources: dict[int, Reference] = {}
    rows = {k: [] for k in ("output", "best reference", "best earlier frame", "the frame itself, coded landmarks",
                            "the frame itself, its own landmarks")}
    open_frames = [t for t, lm in enumerate(real_lm) if lm is not None and lip_gap(lm) >= OPEN_MOUTH
                   and (polygon_mask(truth[t].shape, lm[INNER_LIPS]) > 0.5).sum() >= 20]
    for t in tqdm(open_frames, desc="open-mouth frames", unit="frame"):
        real, lm, target, base = truth[t], real_lm[t], targets[t], outs[t]
        err = lambda source, to=target: interior_error(mouth_from(source, base, to), real, lm)   # noqa: E731
        held = {}
        for at, index, source in sources:
            if at <= t:
                held[index] = source
        rows["output"].append(interior_error(base, real, lm))
        rows["best reference"].append(min([err(still_source)] + [err(source) for source in held.values()]))
        earlier = [s for s in open_frames if s <= t - 15][::3]
        for s in earlier:
            if s not in frame_sources:
                frame_sources[s] = Reference.of(0, Still(truth[s], real_lm[s]))
        rows["best earlier frame"].append(min([err(frame_sources[s]) for s in earlier]) if earlier
                                          else rows["best reference"][-1])
        own = Reference.of(0, Still(real, lm))
        rows["the frame itself, coded landmarks"].append(err(own))
        rows["the frame itself, its own landmarks"].append(err(own, lm))
    print(f"{args.clip.name}: {len(open_frames)} open-mouth frames of {len(truth)}; "
          f"{len(refs)} references arrived")
    for name, values in rows.items():
        print(f"  {name:38s} {np.mean(values):6.1f}")
    print(f"({cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
