"""Is audio2exp late or early on a clip, or is the clip's sound out of sync? For each held-out non-GRID clip
(the interview-style ones of the audio2exp validation split), the Pearson r of the mouth opening between the
model's prediction and the tracked video, with the prediction shifted by -15..+15 frames; prints r at no shift
and the best shift. With --training, the same for the training clips of speakers other than GRID s1 (whose
timing the model learnt): a clip whose sound is out of step with its pictures teaches the network the wrong
timing (lia_vox/obama.mp4, 47 s: -240 ms).

    python scripts/audio2exp_lag.py [--training]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.dataset import SilentTrack
from audio2exp.evaluate import mouth_gaps
from audio2exp.model import load_model
from callsynth.face.basis import load_basis
from callsynth.face.landmark_cache import track_many
from callsynth.machine import cpu_description
from callsynth.split import audio_training_files, audio_validation_files, data_root


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--training", action="store_true",
                    help="the training clips of speakers other than GRID s1, not the held-out interview clips")
    args = ap.parse_args()
    if args.training:
        clips = [p for p in audio_training_files() if p.parent.name != "grid_s1"]
    else:
        clips = [data_root() / c for c in audio_validation_files()["other"]]
    basis = load_basis(None); model = load_model(None, basis)
    tracked = track_many(clips, desc="lm")
    print(f"on {cpu_description()}")
    for path in clips:
        item = tracked[str(path)]; fps = item["fps"]
        try:
            g = mouth_gaps(model, basis, path, item["landmarks"], fps)
        except SilentTrack:
            continue
        if g is None:
            continue
        n = len(g.valid); v, tg, pg = g.valid, g.true, g.predicted
        best = []
        for lag in range(-15, 16):       # frames: prediction shifted later (+) or earlier (-)
            if lag >= 0:
                a, b, m = tg[lag:], pg[:n - lag], v[lag:]
            else:
                a, b, m = tg[:n + lag], pg[-lag:], v[:n + lag]
            best.append((np.corrcoef(a[m], b[m])[0, 1], lag))
        r0 = next(r for r, shift in best if shift == 0)
        r, lag = max(best)
        print(f"{path.parent.name}/{path.name}: r at lag 0 {r0:.3f}; best r {r:.3f} at {lag:+d} frames "
              f"({lag / fps * 1000:+.0f} ms), frames {int(v.sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
