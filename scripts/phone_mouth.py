"""Could pocketsphinx's phones drive the mouth without a network? (The speech issue asks for phonetic
evidence that holds across speakers, the way Rhubarb Lip Sync drives mouths from PocketSphinx.)

Each clip's phones come from pocketsphinx's phone-loop decoder (its wheel's en-us model, trained on many
speakers; `audio2exp.phones.phones_of`, whole clips, offline: more than any streaming decoder would know).
Each video frame gets the mean, over the 40 ms around it, of an openness per phone, smoothed over 0, 1 or
2 frames (Gaussian), by two tables:
- `ling`: how far the jaw and lips open for each phone, written down from phonetics (open vowels 1, close
  vowels about 0.35, p/b/m 0);
- `fit`: the mean lip gap (z-scored per clip) under each phone in the training clips of every speaker but
  GRID s1 (the interview speakers' clips are held out, as for audio2exp).
It prints the Pearson r of each against the tracked lip gap on the held-out interview clips, beside the
shipped model's (`model`) and the model's and the fitted table's z-scores summed (`model+fit1`). No timing.

    python scripts/phone_mouth.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.dataset import SilentTrack  # noqa: E402
from audio2exp.evaluate import mouth_gaps  # noqa: E402
from audio2exp.features import HOP, SAMPLE_RATE  # noqa: E402
from audio2exp.model import load_model  # noqa: E402
from audio2exp.phones import PHONES, phones_of  # noqa: E402
from callsynth.face.basis import load_basis  # noqa: E402
from callsynth.face.landmark_cache import track_many  # noqa: E402
from callsynth.split import audio_training_files, audio_validation_files, data_root  # noqa: E402

OPENNESS = {"SIL": 0.15, "AA": 1.0, "AE": 0.9, "AH": 0.75, "AO": 0.85, "AW": 0.9, "AY": 0.9, "B": 0.0,
            "CH": 0.3, "D": 0.35, "DH": 0.3, "EH": 0.7, "ER": 0.45, "EY": 0.6, "F": 0.15, "G": 0.4, "HH": 0.5,
            "IH": 0.5, "IY": 0.35, "JH": 0.3, "K": 0.4, "L": 0.4, "M": 0.0, "N": 0.35, "NG": 0.4, "OW": 0.65,
            "OY": 0.7, "P": 0.0, "R": 0.4, "S": 0.25, "SH": 0.3, "T": 0.3, "TH": 0.3, "UH": 0.5, "UW": 0.35,
            "V": 0.15, "W": 0.25, "Y": 0.35, "Z": 0.25, "ZH": 0.3}


def frame_phones(path: Path, frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The clip's phone label per 10 ms, and the 10 ms frame under each video frame."""
    labels = phones_of(path)
    under = np.minimum((np.arange(frames) / fps * SAMPLE_RATE / HOP).astype(int), len(labels) - 1)
    return labels, under


def openness(table: np.ndarray, labels: np.ndarray, under: np.ndarray, smooth_frames: int) -> np.ndarray:
    per_10ms = table[labels]
    curve = np.array([per_10ms[max(0, i - 2):i + 2].mean() for i in under])
    if smooth_frames <= 0:
        return curve
    kernel = np.exp(-0.5 * (np.arange(-3 * smooth_frames, 3 * smooth_frames + 1) / smooth_frames) ** 2)
    return np.convolve(np.pad(curve, 3 * smooth_frames, mode="edge"), kernel / kernel.sum(), "valid")


def z(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return (x - x[valid].mean()) / (x[valid].std() + 1e-9)


def gaps(model, basis, path: Path, tracked: dict):
    item = tracked[str(path)]
    try:
        g = mouth_gaps(model, basis, path, item["landmarks"], item["fps"])
    except SilentTrack:
        return None, item["fps"]
    return (g if g is not None and g.valid.sum() >= 20 else None), item["fps"]


def main() -> int:
    basis = load_basis(None)
    model = load_model(None, basis)
    held_out = [data_root() / c for c in audio_validation_files()["other"]]
    training = [p for p in audio_training_files() if "grid_s1" not in str(p)]
    tracked = track_many(held_out + training, desc="landmarks")
    sums, counts = np.zeros(len(PHONES)), np.zeros(len(PHONES))
    for path in training:
        g, fps = gaps(model, basis, path, tracked)
        if g is None:
            continue
        labels, under = frame_phones(path, len(g.true), fps)
        np.add.at(sums, labels[under[g.valid]], z(g.true, g.valid)[g.valid])
        np.add.at(counts, labels[under[g.valid]], 1)
    fitted = np.where(counts > 10, sums / np.maximum(counts, 1), 0.0)
    print("fitted (z-scored gap under each phone):",
          " ".join(f"{p} {v:+.2f}" for p, v, n in zip(PHONES, fitted, counts) if n > 10))
    tables = {"ling": np.array([OPENNESS[p] for p in PHONES]), "fit": fitted}
    rows = []
    for path in held_out:
        g, fps = gaps(model, basis, path, tracked)
        if g is None:
            print(f"{path.name}: no clip to measure")
            continue
        labels, under = frame_phones(path, len(g.true), fps)
        v = g.valid
        row = {"model": np.corrcoef(g.true[v], g.predicted[v])[0, 1]}
        for name, table in tables.items():
            for smooth in (0, 1, 2):
                row[f"{name}{smooth}"] = np.corrcoef(g.true[v], openness(table, labels, under, smooth)[v])[0, 1]
        both = z(g.predicted, v) + z(openness(fitted, labels, under, 1), v)
        row["model+fit1"] = np.corrcoef(g.true[v], both[v])[0, 1]
        rows.append(row)
        print(f"{path.name:24}", " ".join(f"{k} {x:.3f}" for k, x in row.items()))
    print(f"{'mean':24}", " ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
