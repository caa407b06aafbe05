"""How far does the predicted mouth move, against how far the real one does? A network trained by squared
error predicts the expected opening, so where it is unsure of a voice its mouth moves in a narrow band:
under-articulated, the way the interview panels of docs/audio2exp_mouth.png look.

For each clip it takes the lip gap tracked in the video and the one the shipped model predicts from the
clip's sound (`audio2exp.evaluate.mouth_gaps`, the figures `callsynth audio2exp-eval` correlates) and prints
the ratio of their spreads (standard deviation over the tracked frames: 1 = the prediction moves as far as
the real mouth; 2 = half as far) and their mean opening above the closed mouth, for three groups: the
training clips of GRID s1 (the first --grid-clips), the training clips of every other speaker, and each
held-out clip of the validation split. No timing.

    python scripts/mouth_spread.py [--grid-clips 40]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.dataset import SilentTrack  # noqa: E402
from audio2exp.evaluate import mouth_gaps  # noqa: E402
from audio2exp.model import load_model  # noqa: E402
from callsynth.arg_types import positive_int  # noqa: E402
from callsynth.face.basis import load_basis  # noqa: E402
from callsynth.face.landmark_cache import track_many  # noqa: E402
from callsynth.split import audio_training_files, audio_validation_files, data_root  # noqa: E402


def spreads(paths: list[Path], model, basis, desc: str) -> list[tuple[str, float, float, float, float]]:
    """(clip, spread ratio, Pearson r, mean true opening above rest, mean predicted) per measurable clip."""
    tracked = track_many(paths, desc=desc)
    rows = []
    for path in paths:
        item = tracked.get(str(path))
        if item is None:
            continue
        try:
            g = mouth_gaps(model, basis, Path(path), item["landmarks"], item["fps"])
        except SilentTrack:
            continue
        if g is None:
            continue
        true, pred = g.true[g.valid], g.predicted[g.valid]
        rows.append((Path(path).name, float(np.std(true) / np.std(pred)), g.pearson,
                     float(np.mean(true) - g.rest), float(np.mean(pred) - g.rest)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid-clips", type=positive_int, default=40,
                    help="how many of GRID s1's training clips to measure (default 40 of 1000)")
    args = ap.parse_args()
    basis = load_basis()
    model = load_model(basis=basis)
    training = audio_training_files()
    held = audio_validation_files()
    groups = {"GRID s1 (training)": [p for p in training if "grid_s1" in str(p)][:args.grid_clips],
              "other speakers (training)": [p for p in training if "grid_s1" not in str(p)],
              "held out: GRID speakers": [data_root() / f for f in held["grid"]],
              "held out: interview speakers": [data_root() / f for f in held["other"]]}
    print(f"{'group / clip':34s} {'clips':>5s} {'spread true/pred':>16s} {'r':>6s} {'open: true':>10s} {'pred':>6s}")
    for name, paths in groups.items():
        rows = spreads(paths, model, basis, name)
        if not rows:
            print(f"{name:34s} {0:5d}   (no clip measured)")
            continue
        ratio, r, true_open, pred_open = (np.array([row[i] for row in rows]) for i in range(1, 5))
        print(f"{name:34s} {len(rows):5d} {np.median(ratio):10.2f} (median) {np.mean(r):6.3f} "
              f"{np.mean(true_open):10.3f} {np.mean(pred_open):6.3f}")
        if name.startswith("held out"):
            for clip, *values in rows:
                ratio_i, r_i, true_i, pred_i = values
                print(f"  {clip[:32]:32s} {'':5s} {ratio_i:16.2f} {r_i:6.3f} {true_i:10.3f} {pred_i:6.3f}")
    print("spread: standard deviation of the lip gap over the tracked frames; open: mean lip gap above the "
          "closed mouth (share of the eye distance)")


if __name__ == "__main__":
    main()
