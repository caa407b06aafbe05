"""Which sounds may move the mouth: a voice, not silence, hiss, noise or music.

The network learnt speech only; anything loud enough it reads as speech, and opens the mouth to a song or
to traffic noise about as far as to a sentence. Three gates, each a weight from 0 to 1 on a window's code,
computed from the window itself (so a stream and a whole file agree exactly):

- voice: the level of the 70 ms around the frame (silence and faint hiss keep the mouth closed);
- not music: how often the spectrum's shape changes from one 10 ms frame to the next while there is
  sound. Speech moves its formants at nearly every frame (a vowel, a fricative, a closure, a vowel again):
  the median change of its log-mel frame's shape is 0.12 or more (standardised units, over the loud frames
  of a window; 5th percentile of the windows of each of 18 training clips). Sustained notes, chords, a sung
  or played melody, plucked notes, a drum kit hold their shape between attacks: 0.02-0.07 on music made
  here. Under CHANGE_LEVEL the mouth rests.
- not noise: noise changes its shape at every frame too, but at random, so that four frames apart it has
  changed no more than one frame apart; speech's shape moves on (a phone later it is another sound): the
  median change four frames apart exceeds the one-frame change by 0.04-0.19 in speech (a clip's median;
  GRID's noisy recordings lowest), 0.013-0.016 in white, pink, brown or gusting noise. Under
  STRUCTURE_LEVEL the mouth rests. The level is a compromise: speech in loud noise has less structure
  too (held-out GRID speakers under pink noise at 20 dB SNR: Pearson 0.561 with this gate, 0.591 with
  the voice gate alone; 0.435 and 0.436 at 10 dB), while noise alone opens the mouth a third as far as
  without it.

Measured on speech of training speakers and on sounds made here (`scripts/sound_gate.py`,
tests/sounds.py): ../shared/data holds no music or noise recordings.
"""

from __future__ import annotations

import numpy as np

VOICE_LEVEL = -1.4       # standardised level of the 70 ms around t under which there is no voice
VOICE_SOFTNESS = 0.12
CHANGE_LEVEL = 0.10      # median change of the shape per 10 ms frame under which it is music, not speech
CHANGE_SOFTNESS = 0.007
STRUCTURE_LEVEL = 0.018  # how much more the shape changes in 40 ms than in 10 ms, under which it is noise
STRUCTURE_SOFTNESS = 0.003
STRUCTURE_LAG = 4
MIN_PAIRS = 5            # loud frame pairs a window needs before it can tell (else the voice gate decides)


def voice_weight(windows: np.ndarray, centre: int) -> np.ndarray:
    """0 (no voice: hiss, silence) to 1 (voice) for each (B, frames, bands) window, from the level of
    the 7 frames around `centre`. On the training clips fewer than 2 % of open-mouth frames are this quiet."""
    level = windows[:, centre - 3:centre + 4].mean(axis=(1, 2))
    return 1.0 / (1.0 + np.exp(-(level - VOICE_LEVEL) / VOICE_SOFTNESS))


def _median_change(windows: np.ndarray, level: np.ndarray, loud: np.ndarray, lag: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per window, (the median change of the frame's shape from each loud frame to the loud one `lag`
    later, 0 where there is no such pair; the number of pairs)."""
    change = np.abs(windows[:, lag:] - windows[:, :-lag]
                    - (level[:, lag:] - level[:, :-lag])[..., None]).mean(axis=2)
    both = loud[:, lag:] & loud[:, :-lag]
    pairs = both.sum(axis=1)
    ordered = np.sort(np.where(both, change, np.inf), axis=1)
    rows, middle = np.arange(len(windows)), np.maximum(pairs - 1, 0)
    median = 0.5 * (ordered[rows, middle // 2] + ordered[rows, (middle + 1) // 2])
    return np.where(pairs > 0, median, 0.0), pairs


def shape_changes(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: (the median change of the log-mel frame's shape, the frame less its own mean level,
    from one frame to the next; the same STRUCTURE_LAG frames apart; the number of next-frame pairs).
    Only pairs of frames both above the voice level count (pauses would dilute it), and the median, not
    the mean: a drum hit or a plucked note's attack changes the shape once in many frames, speech at
    nearly every one."""
    level = windows.mean(axis=2)
    loud = level > VOICE_LEVEL
    change, pairs = _median_change(windows, level, loud, 1)
    later, _ = _median_change(windows, level, loud, STRUCTURE_LAG)
    return change, later, pairs


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def speech_weight(windows: np.ndarray) -> np.ndarray:
    """0 (music: a shape that holds; noise: a shape that changes at random) to 1 (speech) for each
    window; 1 where the window holds too little sound to tell (fewer than MIN_PAIRS loud pairs)."""
    change, later, pairs = shape_changes(windows)
    weight = (_sigmoid((change - CHANGE_LEVEL) / CHANGE_SOFTNESS) *
              _sigmoid((later - change - STRUCTURE_LEVEL) / STRUCTURE_SOFTNESS))
    return np.where(pairs >= MIN_PAIRS, weight, 1.0)


def speech_gate(windows: np.ndarray, centre: int) -> np.ndarray:
    """The weight a window's mouth code is multiplied by: voice, not music, not noise."""
    return voice_weight(windows, centre) * speech_weight(windows)
