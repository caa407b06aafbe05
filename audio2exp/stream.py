"""Mouth codes from speech, offline for a whole file or streaming as samples arrive.

Both paths cut the same feature frames from the same samples and feed the network the same windows, so
a stream gives the offline codes, each as soon as its 192.5 ms of look-ahead has arrived."""

from __future__ import annotations

import numpy as np

from .features import HOP, N_MELS, SAMPLE_RATE, WIN, log_mel
from .gate import speech_weight, voice_weight
from .model import FUTURE, PAST, Audio2ExpModel, ConvMemory, frame_index_at, windows_at


OFFLINE_CHUNK = 512     # windows through the network at once offline: 4.6 MB each, whatever the file's length


def output_times(samples: np.ndarray, fps: float) -> np.ndarray:
    """The times (s) of the output frames over the whole of `samples` (16 kHz mono) at `fps`."""
    return np.arange(int(len(samples) / SAMPLE_RATE * fps)) / fps


def offline_windows(model: Audio2ExpModel, samples: np.ndarray, fps: float):
    """The network's standardised windows at `fps` over the whole of `samples` (16 kHz mono), OFFLINE_CHUNK
    at a time: what offline codes and the gates' shares are computed from. All at once, an hour of speech
    was a gigabyte of windows and several of activations."""
    mel = model.standardise(model.normaliser().apply(log_mel(samples)))
    centres = frame_index_at(output_times(samples, fps))
    for start in range(0, len(centres), OFFLINE_CHUNK):
        yield windows_at(mel, centres[start:start + OFFLINE_CHUNK], model.silence)


def offline_codes(model: Audio2ExpModel, samples: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(times s, mouth codes) at `fps` over the whole of `samples` (16 kHz mono)."""
    codes = [model.predict(windows) for windows in offline_windows(model, samples, fps)]
    return (output_times(samples, fps),
            np.concatenate(codes) if codes else np.zeros((0, model.blink_code.shape[0]), np.float32))


def sound_kinds(model: Audio2ExpModel, samples: np.ndarray, fps: float) -> dict:
    """How much of a whole sound file the gates (audio2exp/gate.py) read as voice, and how much of that
    loud part they read as speech rather than music or noise: {"voice_share", "speech_share"} over the
    output frames."""
    frames = loud = speech = 0
    for windows in offline_windows(model, samples, fps):
        voiced = voice_weight(windows, PAST) > 0.5
        frames, loud = frames + len(windows), loud + int(voiced.sum())
        speech += int(np.sum(speech_weight(windows[voiced]) > 0.5)) if voiced.any() else 0
    return {"voice_share": round(loud / frames, 3) if frames else 0.0,
            "speech_share": round(speech / loud, 3) if loud else 0.0}


class StreamingMouth:
    """push() 16 kHz samples, get (time s, mouth code) for every output frame that can be computed."""

    def __init__(self, model: Audio2ExpModel, fps: float = 30.0):
        self.model, self.fps = model, fps
        self.pending = np.zeros(0, np.float32)   # samples from the start of the next feature frame on
        self.mel = np.zeros((0, N_MELS), np.float32)   # standardised feature frames from index `base` on
        self.base = 0
        self.norm = model.normaliser()
        self.total = 0                            # samples pushed so far
        self.next_out = 0                         # index of the next output frame
        self.memory = ConvMemory()                # the network's columns shared by consecutive windows

    def push(self, samples: np.ndarray) -> list[tuple[float, np.ndarray]]:
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self.total += len(samples)
        self.pending = np.concatenate([self.pending, samples])
        complete = 1 + (len(self.pending) - WIN) // HOP if len(self.pending) >= WIN else 0
        if complete:
            frames = log_mel(self.pending[:(complete - 1) * HOP + WIN])
            self.mel = np.concatenate([self.mel, self.model.standardise(self.norm.apply(frames))])
            self.pending = self.pending[complete * HOP:]
        return self._emit(final=False)

    def flush(self) -> list[tuple[float, np.ndarray]]:
        """The last frames, whose look-ahead runs past the end of the audio (padded with silence)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[tuple[float, np.ndarray]]:
        limit = int(self.total / SAMPLE_RATE * self.fps) if final else None
        ready = []
        while True:
            t = self.next_out / self.fps
            centre = int(frame_index_at(np.array([t]))[0])
            if final:
                if self.next_out >= limit:
                    break
            elif centre + FUTURE >= self.base + len(self.mel):
                break
            ready.append((t, centre))
            self.next_out += 1
        if not ready:
            return []
        centres = np.array([c for _, c in ready])
        # every frame these windows need is still kept (from `base` on)
        codes = self.model.predict_few(windows_at(self.mel, centres - self.base, self.model.silence),
                                       centres - PAST, self.memory)
        # Forget the frames no later window will look at.
        next_centre = int(frame_index_at(np.array([self.next_out / self.fps]))[0])
        drop = max(0, next_centre - PAST - 1 - self.base)
        if drop:
            self.mel = self.mel[drop:]
            self.base += drop
        return [(t, code) for (t, _), code in zip(ready, codes)]
