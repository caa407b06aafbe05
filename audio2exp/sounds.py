"""Music and noise made here (../shared/data has none): under training's speech as backgrounds
(audio2exp/train.py, other seeds), and alone for the audio gates' tests and `scripts/sound_gate.py`.
16 kHz mono. Music of a few kinds, each built from notes with harmonics and envelopes:

- chords: a piano's four-beat chords;  pad: sustained string-like chords with a slow shimmer;
- melody: a bowed or sung-like lead with vibrato, a note a beat;  band: pad, lead, bass and drums;
- arpeggio: plucked notes, four a beat.

Noise: white, pink, brown, and pink noise whose level jumps every 100 ms (traffic, a crowd, wind).
"""

from __future__ import annotations

import numpy as np

SR = 16000
KINDS = ("chords", "pad", "melody", "band", "arpeggio")
NOISES = ("white", "pink", "brown", "gusts")


def _note(freq: float, seconds: float, kind: str, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "piano":
        env = np.exp(-t * 3.0) * (1 - np.exp(-t * 200))
        wave = sum(np.sin(2 * np.pi * freq * h * t) / h ** 1.2 for h in range(1, 8))
    elif kind == "pad":
        env = np.minimum(1, t / 0.3) * np.minimum(1, (seconds - t) / 0.3)
        wave = sum(np.sin(2 * np.pi * freq * h * t * (1 + 0.002 * np.sin(2 * np.pi * 0.3 * t))) / h
                   for h in range(1, 6))
    elif kind == "lead":
        env = np.minimum(1, t / 0.05) * np.minimum(1, (seconds - t) / 0.05)
        phase = 2 * np.pi * np.cumsum(freq * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * t))) / SR
        wave = sum(np.sin(h * phase) / h for h in range(1, 10))
    else:  # bass
        env = np.exp(-t * 4)
        wave = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
    return amp * env * wave


def synthesise(kind: str, seconds: float = 12.0, seed: int = 1, bpm: float = 100.0) -> np.ndarray:
    """`seconds` of music of `kind` (one of KINDS), peak 0.5."""
    if kind not in KINDS:
        raise ValueError(f"music kind {kind!r}: one of {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    buf = np.zeros(int(seconds * SR))
    beat = 60 / bpm
    scale = 220 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    chords = [(0, 2, 4), (3, 5, 7), (4, 6, 1), (5, 7, 2)]

    def place(wave, at):
        i = int(at * SR)
        buf[i:i + len(wave)] += wave[:len(buf) - i]

    for b in range(int(seconds / beat)):
        t, chord = b * beat, chords[(b // 4) % 4]
        if kind in ("chords", "pad", "band") and b % 4 == 0:
            for i in chord:
                place(_note(scale[i], 4 * beat, "piano" if kind == "chords" else "pad", 0.08), t)
        if kind in ("melody", "band"):
            place(_note(scale[rng.integers(8)] * 2, beat * rng.choice([0.5, 1, 1]), "lead", 0.1), t)
        if kind == "arpeggio":
            for k in range(4):
                place(_note(scale[chord[k % 3]] * (1 + k // 3), beat / 4, "piano", 0.15), t + k * beat / 4)
        if kind == "band":
            kick = np.sin(2 * np.pi * np.cumsum(np.linspace(120, 40, 2400)) / SR) * np.exp(-np.arange(2400) / 600)
            place(0.4 * kick, t)
            if b % 2:
                place(0.15 * rng.standard_normal(1600) * np.exp(-np.arange(1600) / 300), t)
            place(0.04 * rng.standard_normal(600) * np.exp(-np.arange(600) / 100), t + beat / 2)
            place(_note(scale[chord[0]] / 4, beat, "bass", 0.2), t)
    return (buf / max(1e-6, np.abs(buf).max()) * 0.5).astype(np.float32)


def noise(kind: str, seconds: float = 8.0, seed: int = 0, rms: float = 0.1) -> np.ndarray:
    """`seconds` of noise of `kind` (one of NOISES) at `rms`."""
    if kind not in NOISES:
        raise ValueError(f"noise kind {kind!r}: one of {', '.join(NOISES)}")
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    tilt = {"white": 1.0, "pink": np.sqrt(freqs), "brown": freqs, "gusts": np.sqrt(freqs)}[kind]
    wave = np.fft.irfft(spectrum / tilt, n)
    if kind == "gusts":
        wave *= np.repeat(rng.uniform(0.2, 1.0, n // 1600 + 1), 1600)[:n]
    return (rms * wave / wave.std()).astype(np.float32)
