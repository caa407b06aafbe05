"""How much of the interview clips' mouth opening could any model driven by the sound follow? For each held-out
non-GRID clip (the interview-style ones of the audio2exp validation split), the frames are split by the
sound's loudness (RMS over 40 ms, in dB under the clip's 95th percentile; quiet: under QUIET_DB) and it prints:

- the shipped model's Pearson r of mouth opening against the tracked video, over all frames and over the
  loud frames alone;
- the r of the loudness alone (dB, floored at LOUDNESS_FLOOR_DB) against the opening: how much of it the
  voice's rhythm alone would give;
- the tracked mouth's median opening in the quiet frames and in the loud ones (a mouth that opens when
  nothing is heard: breaths, smiles, a pause with the lips apart);
- two oracles that know the true opening wherever there is sound: holding the closed mouth where it is quiet
  (what a model that follows speech and closes the mouth in silence could reach at best), and holding the
  true median there (what it could reach if it also knew how open this person keeps the mouth between
  words). Both are upper bounds, not models.

and draws each clip's true and predicted opening, its quiet stretches shaded, to out/speech_ceiling.png (--plot).

    python scripts/speech_ceiling.py [--plot out/speech_ceiling.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.evaluate import mouth_gaps
from audio2exp.features import SAMPLE_RATE
from audio2exp.model import load_model
from callsynth.face.basis import load_basis
from callsynth.face.landmark_cache import track_many
from callsynth.machine import cpu_description
from callsynth.speech_plot import MouthCurve, plot_mouth_curves
from callsynth.split import audio_validation_files, data_root

QUIET_DB = -15.0            # under the clip's 95th percentile of loudness: quiet
RMS_WINDOW = 640            # samples: 40 ms
LOUDNESS_FLOOR_DB = -40.0   # the loudness as a predictor: no quieter than this under the 95th percentile


def loudness_db(samples: np.ndarray, times: np.ndarray) -> np.ndarray:
    """RMS over 40 ms centred on each time, in dB under the clip's 95th percentile of it."""
    rms = np.sqrt(np.convolve(samples.astype(np.float64) ** 2, np.ones(RMS_WINDOW) / RMS_WINDOW, "same"))
    at = rms[np.minimum((times * SAMPLE_RATE).astype(int), len(rms) - 1)]
    return 20 * np.log10(at / np.percentile(at, 95) + 1e-9)


def r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, default=Path("out/speech_ceiling.png"), help="where the figure goes")
    args = ap.parse_args()
    clips = [data_root() / c for c in audio_validation_files()["other"]]
    basis = load_basis(None); model = load_model(None, basis)
    tracked = track_many(clips, desc="lm")
    print(f"on {cpu_description()}; quiet: under {QUIET_DB:.0f} dB of the clip's 95th percentile of loudness")
    print(f"{'clip':24} {'quiet':>6} {'r all':>6} {'r loud':>6} {'r dB':>6} {'open quiet/loud':>16} "
          f"{'oracle closed':>13} {'oracle median':>13}")
    rows, curves = [], []
    for path in clips:
        item = tracked[str(path)]; fps = item["fps"]
        g = mouth_gaps(model, basis, path, item["landmarks"], fps)
        true, said, v, rest = g.true, g.predicted, g.valid, g.rest
        times = np.arange(len(v)) / fps
        db = loudness_db(g.samples, times)
        loud = db >= QUIET_DB
        row = {"quiet": float(np.mean(~loud[v])), "all": r(true[v], said[v]),
               "loud": r(true[v & loud], said[v & loud]),
               "dB": r(true[v], np.maximum(db, LOUDNESS_FLOOR_DB)[v]),
               "open_quiet": float(np.median(true[v & ~loud])) if np.any(v & ~loud) else float("nan"),
               "open_loud": float(np.median(true[v & loud])),
               "closed": r(true[v], np.where(loud, true, rest)[v]),
               "median": r(true[v], np.where(loud, true, np.median(true[v]))[v])}
        rows.append(row); curves.append((path.name, times, true, said, v, db))
        print(f"{path.name:24} {row['quiet']:6.0%} {row['all']:6.3f} {row['loud']:6.3f} {row['dB']:6.3f} "
              f"{row['open_quiet']:7.3f} / {row['open_loud']:.3f} {row['closed']:13.3f} {row['median']:13.3f}")
    mean = {k: float(np.mean([row[k] for row in rows])) for k in ("all", "loud", "dB", "closed", "median")}
    print(f"{'mean':24} {'':6} {mean['all']:6.3f} {mean['loud']:6.3f} {mean['dB']:6.3f} {'':16} {mean['closed']:13.3f} "
          f"{mean['median']:13.3f}")

    plot_mouth_curves([MouthCurve(name, times, true, said, v, db < QUIET_DB, "quiet")
                       for name, times, true, said, v, db in curves], args.plot)
    print(f"figure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
