"""The audio → mouth-code network and its checkpoint.

For an output time t the network sees log-mel frames from 400 ms before t to 180 ms after it (the last
window ends 192.5 ms after t): that look-ahead is the whole algorithmic delay, under the 200 ms budget."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .features import FRAME_RATE, HOP, N_MELS, SAMPLE_RATE, WIN, RunningMean, mel_basis
from .gate import speech_gate
from .targets import mouth_holding_eyes

PAST = 40          # feature frames before the output time
FUTURE = 18        # feature frames after it
CONTEXT = PAST + 1 + FUTURE
LOOKAHEAD_MS = (FUTURE * HOP + WIN / 2) / SAMPLE_RATE * 1000
MODEL_FORMAT = 2   # 2: log-mel minus a causal running mean
SILENCE_LOG_MEL = float(np.log(1e-8))   # what a frame of digital silence gives


class AudioToMouth(nn.Module):
    """Dilated 1-D convolutions over the mel window, pooled to one code."""

    def __init__(self, k: int, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(N_MELS, width, 3, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=4, dilation=4), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=8, dilation=8), nn.GELU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(width * CONTEXT, 256),
                                  nn.GELU(), nn.Linear(256, k))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, CONTEXT, N_MELS) standardised log-mel windows → (B, K) mouth codes."""
        return self.head(self.net(windows.transpose(1, 2)))


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU as torch's default (erf) computes it."""
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x * np.float32(0.7071067811865476)))


class ConvMemory:
    """One stream's columns of AudioToMouth's convolutions that do not depend on where a window begins.

    Inside a window each convolution pads with zeros, so its outputs near the window's two ends belong to
    that window; but a layer's output 1 + 2 + ... + its dilation frames or more from both ends sees only
    feature frames, and is the same in every window that holds them. A stream's consecutive windows (3.3
    feature frames apart at 30 fps) share most of those columns: kept here by absolute feature frame, each
    is computed once (per layer, the contiguous span [lo, lo + n))."""

    def __init__(self):
        self.spans: dict[int, tuple[int, np.ndarray]] = {}      # layer → (lo, its columns from lo on)


class NumpyNet:
    """AudioToMouth's forward pass in numpy, for a stream's one or two windows at a time: torch's per-call
    overhead was most of a frame's cost (3.1 ms a window here, against about a third of that in numpy).
    A convolution is one matrix product over the columns it computes (its taps stacked); the head reads
    its first weights as a matrix times columns (the order they lie in memory). With a ConvMemory, the
    columns a stream's earlier windows already gave are not computed again."""

    def __init__(self, net: AudioToMouth):
        convs = [m for m in net.net if isinstance(m, nn.Conv1d)]
        # (out, kernel * in), the first tap first, to multiply stacked taps [x(t-d), x(t), x(t+d)]
        self.convs = [(np.ascontiguousarray(c.weight.detach().numpy().transpose(0, 2, 1).reshape(len(c.weight), -1)),
                       c.bias.detach().numpy().copy()[:, None], c.dilation[0]) for c in convs]
        assert all(c.kernel_size[0] == 3 and c.padding[0] == c.dilation[0] for c in convs)
        # how far from a window's ends each layer's output still sees the zero padding
        self.margins = np.cumsum([d for _, _, d in self.convs]).tolist()
        self.head = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()[:, None])
                     for m in net.head if isinstance(m, nn.Linear)]

    def __call__(self, windows: np.ndarray, starts: np.ndarray | None = None,
                 memory: ConvMemory | None = None) -> np.ndarray:
        """(B, CONTEXT, N_MELS) standardised windows → (B, K) codes, as AudioToMouth gives them. `starts`:
        the absolute feature frame each window begins at, for `memory` (one stream's, windows in order)."""
        (w1, b1), (w2, b2) = self.head
        codes = []
        for b, window in enumerate(np.asarray(windows, np.float32)):
            h = window.T                                             # (channels, frames)
            for layer, ((w, bias, d), margin) in enumerate(zip(self.convs, self.margins)):
                h = self._layer(h, w, bias, d, margin, layer, None if memory is None else (int(starts[b]), memory))
            x = h.reshape(-1, 1)                                     # channel-major, as nn.Flatten
            codes.append((w2 @ _gelu(w1 @ x + b1) + b2)[:, 0])
        return np.stack(codes) if codes else np.zeros((0, len(w2)), np.float32)

    @staticmethod
    def _layer(h: np.ndarray, w: np.ndarray, bias: np.ndarray, d: int, margin: int, layer: int,
               remembered: tuple[int, ConvMemory] | None) -> np.ndarray:
        """One convolution + GELU over a window's columns h (channels, frames), zero-padded by d."""
        frames = h.shape[1]
        padded = np.zeros((h.shape[0], frames + 2 * d), np.float32)
        padded[:, d:d + frames] = h
        out = np.empty((w.shape[0], frames), np.float32)
        todo = np.arange(frames)
        if remembered is not None:
            start, memory = remembered
            lo, hi = start + margin, start + frames - margin          # [lo, hi): the same in every window
            span = memory.spans.get(layer)
            keep = 0
            if span is not None and span[0] <= lo < span[0] + span[1].shape[1]:
                keep = min(hi, span[0] + span[1].shape[1]) - lo
                out[:, margin:margin + keep] = span[1][:, lo - span[0]:lo - span[0] + keep]
            todo = np.concatenate([np.arange(margin), np.arange(margin + keep, frames)])
        taps = np.concatenate([padded[:, todo], padded[:, todo + d], padded[:, todo + 2 * d]], axis=0)
        out[:, todo] = _gelu(w @ taps + bias)
        if remembered is not None and hi > lo:
            memory.spans[layer] = (lo, out[:, margin:frames - margin].copy())
        return out


class ModelError(ValueError):
    """A checkpoint that is missing, damaged, or made for another basis or format."""


@dataclass
class Audio2ExpModel:
    net: AudioToMouth
    mel_mean: np.ndarray
    mel_std: np.ndarray
    blink_code: np.ndarray
    basis_name: str
    meta: dict
    # (K, K) map that keeps the eyes still under a predicted mouth (targets.mouth_holding_eyes); set by
    # load_model from the call's basis
    hold_eyes: np.ndarray | None = field(default=None, repr=False, compare=False)
    _numpy: NumpyNet | None = field(default=None, repr=False, compare=False)

    def normaliser(self) -> RunningMean:
        """A fresh running mean for one stream of audio, starting from the training set's mean."""
        return RunningMean(self.mel_mean)

    def standardise(self, centred: np.ndarray) -> np.ndarray:
        """Log-mel frames with the running mean removed, scaled by the training set's spread."""
        return (centred / self.mel_std).astype(np.float32)

    @property
    def silence(self) -> np.ndarray:
        """What the network sees before the audio starts and after it ends."""
        return ((np.full(N_MELS, SILENCE_LOG_MEL) - self.mel_mean) / self.mel_std).astype(np.float32)

    @torch.inference_mode()
    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Mouth codes for standardised windows, closed where there is no voice or it is not speech
        (audio2exp/gate.py)."""
        self.net.eval()
        codes = self.net(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
        return self.gated(codes, speech_gate(windows, PAST))

    def predict_few(self, windows: np.ndarray, starts: np.ndarray | None = None,
                    memory: ConvMemory | None = None) -> np.ndarray:
        """predict() for a stream's few windows, in numpy (NumpyNet): the same codes, in a fraction of the
        time; with the stream's `memory` and each window's first feature frame, less still."""
        if self._numpy is None:
            self.net.eval()
            self._numpy = NumpyNet(self.net)
        return self.gated(self._numpy(windows, starts, memory), speech_gate(windows, PAST))

    def gated(self, codes: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """The network's codes times a gate's weight per window (0 closes the mouth), with the eyes held."""
        codes = codes * weight[:, None]
        return codes if self.hold_eyes is None else (codes @ self.hold_eyes.T).astype(np.float32)

    def save(self, folder: Path) -> Path:
        state = {"format": MODEL_FORMAT, "net": self.net.state_dict(), "k": self.blink_code.shape[0],
                 "mel_mean": torch.from_numpy(self.mel_mean), "mel_std": torch.from_numpy(self.mel_std),
                 "blink_code": torch.from_numpy(self.blink_code), "basis": self.basis_name,
                 "meta": {k: str(v) for k, v in self.meta.items()}}
        buf = io.BytesIO()
        torch.save(state, buf)
        digest = hashlib.sha256(buf.getvalue()).hexdigest()[:12]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"audio2exp-{digest}.pt"
        path.write_bytes(buf.getvalue())
        return path


def load_model(path: str | Path | None = None, basis=None) -> Audio2ExpModel:
    """The shipped model (or `path`), checked against the basis the call uses."""
    from callsynth.checkpoints import read_checkpoint

    path = Path(path) if path else default_model_path()
    state = read_checkpoint(path, ModelError, "audio2exp model", MODEL_FORMAT, basis,
                            "train one with `callsynth audio2exp-train`")
    net = AudioToMouth(int(state["k"]))
    net.load_state_dict(state["net"])
    # the features' filterbank now (librosa's import: 2 s on a 2-core EPYC), not at the first audio of a
    # call that the voice drives
    mel_basis()
    return Audio2ExpModel(net, state["mel_mean"].numpy(), state["mel_std"].numpy(),
                          state["blink_code"].numpy(), state["basis"], dict(state["meta"]),
                          hold_eyes=mouth_holding_eyes(basis) if basis is not None else None)


def default_model_path() -> Path:
    folder = Path(__file__).parent / "assets"
    found = sorted(folder.glob("audio2exp-*.pt"))
    if not found:
        return folder / "audio2exp-missing.pt"
    return found[-1]


def windows_at(mel_std: np.ndarray, centres: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """(len(centres), CONTEXT, N_MELS) windows around feature frames `centres`; before the start and
    after the end of the audio the window holds `pad` (standardised silence)."""
    padded = np.vstack([mel_std, pad[None, :]])
    idx = np.asarray(centres)[:, None] + np.arange(-PAST, FUTURE + 1)[None, :]
    idx = np.where((idx < 0) | (idx >= len(mel_std)), len(mel_std), idx)
    return padded[idx]


def frame_index_at(t_s: np.ndarray) -> np.ndarray:
    """The feature frame centred nearest to time t (s)."""
    return np.round((np.asarray(t_s) * SAMPLE_RATE - WIN / 2) / HOP).astype(np.int64)


__all__ = ["AudioToMouth", "Audio2ExpModel", "ConvMemory", "ModelError", "load_model", "windows_at", "frame_index_at",
           "PAST", "FUTURE", "CONTEXT", "LOOKAHEAD_MS", "FRAME_RATE", "SILENCE_LOG_MEL"]
