"""Does `callsynth combine` transfer identity? For ordered pairs of validation people (never trained on),
A's face from the first frame of one of A's clips into frames of one of B's clips, and dlib's face
recognition (the evaluator's measure, ../shared/tools/face_metrics.py: cosine of 128-d descriptors) of the
output against A's picture and against B's frame. The transfer holds on a pair when cos(out, A) > cos(out, B).

    python scripts/combine_identity.py [--frames 3] [--no-refine] [--out out/combine_identity]

Prints one line per pair and the share of pairs that hold; writes A | B | output strips and a JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callsynth.combine import combine
from callsynth.eval.metrics import face_descriptor as embedding
from callsynth.face.basis import load_basis
from callsynth.machine import cpu_description
from callsynth.media import iter_frames
from callsynth.split import data_root, validation_people


def frame_at(path: Path, index: int) -> np.ndarray:
    for i, frame in enumerate(iter_frames(path)):
        if i == index:
            return frame
    raise ValueError(f"{path} has no frame {index}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1, help="frames of each B clip to combine (every 10th)")
    ap.add_argument("--no-refine", action="store_true", help="the transfer alone, without the generator")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "combine_identity")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = data_root()
    people = {name: root / files[0] for name, files in validation_people().items()}
    basis = load_basis(None)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        stills = {}
        for name, clip in people.items():
            stills[name] = Path(tmp) / f"{name}.png"
            cv2.imwrite(str(stills[name]), frame_at(clip, 0)[:, :, ::-1])
        for a, b in permutations(people, 2):
            a_emb = embedding(cv2.imread(str(stills[a]))[:, :, ::-1])
            for k in range(args.frames):
                index = 10 * k + 5
                b_frame = frame_at(people[b], index)
                b_png = Path(tmp) / "b.png"
                cv2.imwrite(str(b_png), b_frame[:, :, ::-1])
                out_png = args.out / f"{a}__{b}_{index}.png"
                combine(stills[a], b_png, out_png, basis, "warp" if args.no_refine else "generator", progress=False)
                out = cv2.imread(str(out_png))[:, :, ::-1]
                e_out, e_b = embedding(out), embedding(b_frame)
                if e_out is None or e_b is None or a_emb is None:
                    rows.append(dict(a=a, b=b, frame=index, found=False))
                    print(f"{a:>18} into {b:<18} frame {index:3d}: no face for dlib")
                    continue
                cos_a, cos_b = float(e_out @ a_emb), float(e_out @ e_b)
                rows.append(dict(a=a, b=b, frame=index, found=True, cos_a=cos_a, cos_b=cos_b, holds=cos_a > cos_b))
                print(f"{a:>18} into {b:<18} frame {index:3d}: cos(out, A) {cos_a:.3f}  cos(out, B) {cos_b:.3f}"
                      f"  {'holds' if cos_a > cos_b else 'FAILS'}", flush=True)
    found = [r for r in rows if r["found"]]
    holds = sum(r["holds"] for r in found)
    summary = dict(cpu=cpu_description(), refine=not args.no_refine, pairs=len(rows), measured=len(found), holds=holds,
                   mean_cos_a=float(np.mean([r["cos_a"] for r in found])) if found else None,
                   mean_cos_b=float(np.mean([r["cos_b"] for r in found])) if found else None,
                   seconds=round(time.time() - started, 1), rows=rows)
    (args.out / "combine_identity.json").write_text(json.dumps(summary, indent=1))
    print(f"identity transferred on {holds} of {len(found)} measured pairs ({len(rows) - len(found)} without a "
          f"face for dlib); mean cos(out, A) {summary['mean_cos_a']:.3f}, cos(out, B) {summary['mean_cos_b']:.3f}; "
          f"{summary['seconds']} s on {summary['cpu']}")
    return 0 if found and holds == len(found) else 1


if __name__ == "__main__":
    sys.exit(main())
