"""Do music and noise move the mouth as speech does? The speech-driven mouth's opening on music and noise
made here (audio2exp/sounds.py) against its opening on the held-out speakers' clips, with all the gates of
audio2exp/gate.py and with the voice gate alone (as before the music and noise gates).

Opening: the predicted code's lip gap above the resting mouth's (share of the eye distance, on the basis's
mean face), mean over frames; "open": frames over 0.05.

    python scripts/sound_gate.py [--clips CLIP ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.features import load_audio
from audio2exp.gate import speech_gate, voice_weight
from audio2exp.model import PAST, load_model
from audio2exp.stream import offline_windows
from audio2exp.targets import gap_of_code
from callsynth.face.basis import load_basis
from callsynth.machine import cpu_description
from callsynth.split import audio_validation_files, data_root
from audio2exp.sounds import KINDS, NOISES, noise, synthesise

FPS = 25.0
OPEN = 0.05


def openings(model, basis, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gap above rest with both gates, the same with the voice gate alone) for every frame."""
    windows = np.concatenate(list(offline_windows(model, samples, FPS)))     # a few seconds: all at once
    with torch.inference_mode():
        codes = model.net.eval()(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
    gated = model.gated(codes, speech_gate(windows, PAST))     # as model.predict gives them
    raw = model.gated(codes, voice_weight(windows, PAST))      # the voice gate alone
    rest = float(gap_of_code(np.zeros(basis.k), basis.mean_shape, basis))
    return gap_of_code(gated, basis.mean_shape, basis) - rest, gap_of_code(raw, basis.mean_shape, basis) - rest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", help="speech clips (default: the audio2exp validation set)")
    args = parser.parse_args()
    basis = load_basis(None)
    model = load_model(None, basis)
    if args.clips:
        clips = [Path(c) for c in args.clips]
    else:
        held = audio_validation_files()
        clips = [data_root() / c for c in held["grid"] + held["other"]]
    print(f"{'sound':32s} {'opening (gate / voice only)':>28s} {'open frames':>20s}")
    means = {"speech": [], "music": [], "noise": []}
    for name, samples, group in ([(c.parent.name + "/" + c.stem, load_audio(c), "speech") for c in clips] +
                                 [("music: " + k, synthesise(k), "music") for k in KINDS] +
                                 [("noise: " + k, noise(k), "noise") for k in NOISES]):
        gated, raw = openings(model, basis, samples)
        means[group].append((gated.mean(), raw.mean()))
        print(f"{name[:32]:32s} {gated.mean():13.3f} / {raw.mean():.3f} {np.mean(gated > OPEN):12.0%} / "
              f"{np.mean(raw > OPEN):.0%}")
    for group, rows in means.items():
        rows = np.array(rows)
        print(f"mean over {group} ({len(rows)}): {rows[:, 0].mean():.3f} with the speech gate, "
              f"{rows[:, 1].mean():.3f} with the voice gate alone")
    print(f"({cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
