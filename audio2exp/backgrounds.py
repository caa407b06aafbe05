"""Sound under the voice, for training: music, noise or another voice mixed under each clip's speech.

The network learnt from clean recordings and followed a voice with anything under it far less: on the
held-out GRID speakers, mouth-opening Pearson 0.73 clean, 0.33 with a band (music made here) 20 dB under
the voice and 0.58 with pink noise there, the gates left out (a /tmp probe, 2-core AMD EPYC at 2.6 GHz).
Casual recordings have a room, a street or music under them. Mixed in the log-mel domain: the powers of
two sounds that do not line up add, band by band, so a mix is log(exp(voice) + exp(background)), at the
clip's own mel frames (no audio is decoded twice).
"""

from __future__ import annotations

import numpy as np

from .features import log_mel
from .sounds import KINDS, NOISES, noise, synthesise

BABBLE = "babble"           # another training clip's speech, from another folder (another person)
BANK_SECONDS = 40.0
BANK_SEED = 100             # the gates' tests and scripts/sound_gate.py use seeds 0 and 1
LOUD_SHARE = 0.5            # the voice's level: the mean power of its loudest half of frames


def background_bank(seed: int = BANK_SEED) -> dict[str, np.ndarray]:
    """Log-mel frames of BANK_SECONDS of each kind of music and noise made here."""
    bank = {f"music: {kind}": log_mel(synthesise(kind, BANK_SECONDS, seed=seed)) for kind in KINDS}
    bank.update({f"noise: {kind}": log_mel(noise(kind, BANK_SECONDS, seed=seed)) for kind in NOISES})
    return bank


def _frame_power(mel: np.ndarray) -> np.ndarray:
    """Each log-mel frame's power over all bands."""
    return np.exp(mel.astype(np.float64)).sum(1)


def _voice_power(mel: np.ndarray) -> float:
    power = _frame_power(mel)
    loud = np.sort(power)[-max(1, int(len(power) * LOUD_SHARE)):]
    return float(loud.mean())


def under_voice(voice: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """`background` (samples, as long as `voice`) mixed into the waveform of `voice`, `snr_db` below the
    voice's level as `mixed` sets it: what a microphone hears (scripts/speech_under_sound.py, the tests)."""
    gain = np.sqrt(_voice_power(log_mel(voice)) / _frame_power(log_mel(background)).mean() / 10 ** (snr_db / 10))
    return (voice + gain * background).astype(np.float32)


def mixed(mel: np.ndarray, background: np.ndarray, snr_db: float, start: int = 0) -> np.ndarray:
    """`mel` (log-mel frames of a voice) with `background`'s frames from `start` on (repeated as needed)
    under it, `snr_db` below the voice's level (LOUD_SHARE)."""
    index = (start + np.arange(len(mel))) % len(background)
    under = background[index].astype(np.float64)
    gain = np.log(_voice_power(mel) / max(_frame_power(under).mean(), 1e-30)) - snr_db * np.log(10) / 10
    return np.logaddexp(mel.astype(np.float64), under + gain).astype(np.float32)


def with_backgrounds(mels: list[np.ndarray], folders: list[str], rng: np.random.Generator,
                     snr_db: tuple[float, float], bank: dict[str, np.ndarray] | None = None) -> list[str]:
    """Each of `mels` mixed in place with a background drawn at random (a kind of music or noise from
    `bank`, or BABBLE: another folder's clip) at an SNR drawn from `snr_db`; returns the kind each got."""
    bank = background_bank() if bank is None else bank
    kinds = [*bank, BABBLE]
    clean = list(mels)
    out = []
    for i, mel in enumerate(clean):
        kind = kinds[rng.integers(len(kinds))]
        others = [j for j, folder in enumerate(folders) if folder != folders[i]] if kind == BABBLE else []
        if kind == BABBLE and not others:
            kind = kinds[0]
        under = clean[others[rng.integers(len(others))]] if others else bank[kind]
        mels[i] = mixed(mel, under, float(rng.uniform(*snr_db)), int(rng.integers(len(under))))
        out.append(kind)
    return out
