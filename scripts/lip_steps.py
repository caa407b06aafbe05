"""How often does the lip gap's correction change its step from one packet to the next? The correction
travels in 3 bits (steps of 0.02 iris distances, `wire.LIP_RANGE`); a value near the middle of two steps may
flip between them and back, about a pixel of lip for the frames between two packets. For each clip, as
the sender sends it (its own tracking and smoothing, 15 packets a second, decoded as the receiver does):
packets with a face, how many change the step, how many go back to the step before the one before
(A-B-A), and how the packets spread over the steps.

    python scripts/lip_steps.py [CLIP ...]      (default: the validation clips)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.face.basis import load_basis
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames, read_still, video_info
from callsynth.reenact import packet_every
from callsynth.split import eval_clips
from callsynth.wire import LIP_RANGE, LIP_STEP
from sender.features import FeatureEncoder


def lip_steps(clip: Path, basis) -> np.ndarray:
    """The step index of each sent packet's lip correction (packets with a face), still = first frame."""
    fps = video_info(clip).fps
    still = prepare_still(read_still(clip), source=f"{clip.name} first frame")
    encoder = FeatureEncoder(basis, still, fps=fps, send_every=packet_every(fps), references=False)
    steps = []
    try:
        for i, frame in enumerate(iter_frames(clip)):
            packet = encoder.process(frame, int(i * 1000 / fps)).packet
            if packet is not None:
                features = encoder.codec.decode(packet)
                if features.has_face:
                    steps.append(round((features.lips - LIP_RANGE[0]) / LIP_STEP))
    finally:
        encoder.close()
    return np.array(steps, dtype=int)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path)
    args = parser.parse_args()
    basis = load_basis(None)
    print("clip | packets | step changes | A-B-A | packets per step (from the lowest used)")
    for clip in args.clips or eval_clips():
        steps = lip_steps(clip, basis)
        if len(steps) < 3:
            print(f"{clip.name} | {len(steps)} | – | – | –")
            continue
        changes = int(np.sum(steps[1:] != steps[:-1]))
        back = int(np.sum((steps[2:] == steps[:-2]) & (steps[1:-1] != steps[:-2])))
        spread = np.bincount(steps - steps.min())
        low = LIP_RANGE[0] + steps.min() * LIP_STEP
        print(f"{clip.name} | {len(steps)} | {changes} ({changes / len(steps):.0%}) | {back} "
              f"({back / len(steps):.0%}) | {' '.join(map(str, spread))} from {low:+.2f}")
    print(f"({cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
