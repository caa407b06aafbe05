"""Does the speech-driven mouth still follow a voice with music, noise or a room under it? Mouth-opening
Pearson (predicted against tracked lip gap, as `callsynth audio2exp-eval` measures it) on the held-out
speakers' clips, clean and with each kind of music and noise made here (audio2exp/sounds.py, seeds that
training's backgrounds do not use) or another held-out speaker's voice mixed into the waveform at each SNR
(the voice's level: the mean power of its loudest half of 10 ms frames, as audio2exp/backgrounds.py sets it).

    python scripts/speech_under_sound.py [--model PATH] [--snr 20 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.backgrounds import under_voice
from audio2exp.dataset import build_clip
from audio2exp.evaluate import clip_groups, gaps_of
from audio2exp.features import SAMPLE_RATE, load_audio
from audio2exp.model import load_model
from audio2exp.sounds import noise, synthesise
from callsynth.face.basis import load_basis
from callsynth.face.landmark_cache import track_many
from callsynth.machine import cpu_description
from callsynth.split import audio_validation_files, data_root

SEED = 7
LABELS = {"grid": "GRID speakers", "other": "interview speakers", "all": "all"}
BEDS = [("music", k) for k in ("band", "pad", "chords")] + [("noise", k) for k in ("pink", "gusts")] + [
    ("voice", "another voice")]    # the next held-out clip's speaker (a real recording, not made here)


def _bed(bed: tuple[str, str], clips: list[Path], index: int, length: int) -> np.ndarray:
    """`length` samples of a background: music or noise made here, or the next clip's voice repeated."""
    if bed[0] == "voice":
        other = load_audio(clips[(index + 1) % len(clips)])
        return np.tile(other, length // len(other) + 1)[:length]
    make = synthesise if bed[0] == "music" else noise
    return make(bed[1], length / SAMPLE_RATE + 1, seed=SEED)[:length]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="audio2exp checkpoint (default: the shipped one)")
    parser.add_argument("--snr", type=float, nargs="+", default=[20.0, 10.0], help="SNRs in dB (default 20 10)")
    args = parser.parse_args()
    basis = load_basis(None)
    model = load_model(args.model, basis)
    held = audio_validation_files()
    clips = [data_root() / c for c in held["grid"] + held["other"]]
    tracked = track_many(clips, desc="landmarks")
    conditions = [("clean", None, None)] + [(f"{kind} {snr:g} dB", (group, kind), snr)
                                           for group, kind in BEDS for snr in args.snr]
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in conditions}
    for index, path in enumerate(clips):
        item = tracked.get(str(path))
        clip = build_clip(path, item["landmarks"], item["fps"], basis) if item else None
        if clip is None:
            print(f"left out: {path} (no face or no sound)")
            continue
        voice = load_audio(path)
        for name, bed, snr in conditions:
            samples = voice if bed is None else under_voice(voice, _bed(bed, clips, index, len(voice)), snr)
            rows[name].append({"clip": str(path), "pearson": gaps_of(model, basis, clip, samples).pearson})
    names = ["grid", "other", "all"]
    print(f"{'sound under the voice':24s}" + "".join(f"{LABELS[g]:>22s}" for g in names))
    for name, _, _ in conditions:
        groups = clip_groups(rows[name])
        print(f"{name:24s}" + "".join(f"{np.mean([r['pearson'] for r in groups[g]]):22.3f}" for g in names))
    print(f"mouth-opening Pearson, mean over clips; model {args.model or 'shipped'}; {cpu_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
