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
audio2exp/sounds.py): ../shared/data holds no music or noise recordings.
"""

from __future__ import annotations

import math

import numpy as np

from callsynth.compiled import compiled

VOICE_LEVEL = -1.4       # standardised level of the 70 ms around t under which there is no voice
VOICE_SOFTNESS = 0.12
CHANGE_LEVEL = 0.10      # median change of the shape per 10 ms frame under which it is music, not speech
CHANGE_SOFTNESS = 0.007
STRUCTURE_LEVEL = 0.018  # how much more the shape changes in 40 ms than in 10 ms, under which it is noise
STRUCTURE_SOFTNESS = 0.003
STRUCTURE_LAG = 4
MIN_PAIRS = 5            # loud frame pairs a window needs before it can tell (else the voice gate decides)

# The gates are computed one window at a time, compiled (numba): a stream asks for one window a frame, and
# as numpy calls over a (1, 59, 40) window they took 90-160 µs of its compute, nearly all of it numpy's
# per-call overhead; compiled, 13 µs (2-core Intel Xeon at 2.1 GHz, a /tmp probe timing both). A whole
# file's windows go through the same kernel, so a stream and a file agree exactly. (Contiguous float32
# windows: another layout or type would be compiled again.)


@compiled
def _level(window, first, last):
    """The mean of frames first..last-1 over all bands."""
    total = 0.0
    for i in range(first, last):
        for band in range(window.shape[1]):
            total += window[i, band]
    return total / ((last - first) * window.shape[1])


@compiled
def _voice(window, centre):
    level = _level(window, centre - 3, centre + 4)
    return 1.0 / (1.0 + math.exp(-(level - VOICE_LEVEL) / VOICE_SOFTNESS))


@compiled
def _median_change(window, level, loud, lag):
    """(the median change of the frame's shape from each loud frame to the loud one `lag` later, 0 where
    there is no such pair; the number of pairs)."""
    changes = np.empty(len(window) - lag)
    pairs = 0
    for i in range(len(window) - lag):
        if loud[i] and loud[i + lag]:
            step = level[i + lag] - level[i]
            total = 0.0
            for band in range(window.shape[1]):
                total += abs(window[i + lag, band] - window[i, band] - step)
            changes[pairs] = total / window.shape[1]
            pairs += 1
    if pairs == 0:
        return 0.0, 0
    for i in range(1, pairs):            # insertion sort: a window's few dozen pairs
        value, j = changes[i], i - 1
        while j >= 0 and changes[j] > value:
            changes[j + 1] = changes[j]
            j -= 1
        changes[j + 1] = value
    return 0.5 * (changes[(pairs - 1) // 2] + changes[pairs // 2]), pairs


@compiled
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, x))))


@compiled
def _speech(window):
    """Only pairs of frames both above the voice level count (pauses would dilute it), and the median,
    not the mean: a drum hit or a plucked note's attack changes the shape once in many frames, speech at
    nearly every one."""
    level = np.empty(len(window))
    loud = np.empty(len(window), np.bool_)
    for i in range(len(window)):
        level[i] = _level(window, i, i + 1)
        loud[i] = level[i] > VOICE_LEVEL
    change, pairs = _median_change(window, level, loud, 1)
    if pairs < MIN_PAIRS:
        return 1.0
    later, _ = _median_change(window, level, loud, STRUCTURE_LAG)
    return (_sigmoid((change - CHANGE_LEVEL) / CHANGE_SOFTNESS) *
            _sigmoid((later - change - STRUCTURE_LEVEL) / STRUCTURE_SOFTNESS))


@compiled
def _gates(windows, centre, voice, speech):
    out = np.empty(len(windows))
    for b in range(len(windows)):
        out[b] = 1.0
        if voice:
            out[b] *= _voice(windows[b], centre)
        if speech:
            out[b] *= _speech(windows[b])
    return out


def voice_weight(windows: np.ndarray, centre: int) -> np.ndarray:
    """0 (no voice: hiss, silence) to 1 (voice) for each (B, frames, bands) window, from the level of
    the 7 frames around `centre`. On the training clips fewer than 2 % of open-mouth frames are this quiet."""
    return _gates(np.ascontiguousarray(windows, np.float32), centre, True, False)


def speech_weight(windows: np.ndarray) -> np.ndarray:
    """0 (music: a shape that holds; noise: a shape that changes at random) to 1 (speech) for each
    window; 1 where the window holds too little sound to tell (fewer than MIN_PAIRS loud pairs). The shape
    is the log-mel frame less its own mean level; its change is the mean absolute change over the bands,
    from one frame to the next and STRUCTURE_LAG frames apart."""
    return _gates(np.ascontiguousarray(windows, np.float32), 0, False, True)


def speech_gate(windows: np.ndarray, centre: int) -> np.ndarray:
    """The weight a window's mouth code is multiplied by: voice, not music, not noise."""
    return _gates(np.ascontiguousarray(windows, np.float32), centre, True, True)
