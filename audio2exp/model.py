"""The audio → mouth-code network and its checkpoint.

For an output time t the network sees log-mel frames from 400 ms before t to 180 ms after it (the last
window ends 192.5 ms after t): that look-ahead is the whole algorithmic delay, under the 200 ms budget."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from callsynth.compiled import compiled

from .features import FRAME_RATE, HOP, N_MELS, SAMPLE_RATE, WIN, RunningMean, mel_basis
from .gate import speech_gate
from .targets import mouth_holding_eyes

PAST = 40          # feature frames before the output time
FUTURE = 18        # feature frames after it
CONTEXT = PAST + 1 + FUTURE
LOOKAHEAD_MS = (FUTURE * HOP + WIN / 2) / SAMPLE_RATE * 1000
MODEL_FORMAT = 3   # 2: log-mel minus a causal running mean; 3: and unpadded convolutions
SILENCE_LOG_MEL = float(np.log(1e-8))   # what a frame of digital silence gives


DILATIONS = (1, 2, 4, 8)
COLUMNS = CONTEXT - 2 * sum(DILATIONS)   # the convolutions' output columns a window gives


class AudioToMouth(nn.Module):
    """Dilated 1-D convolutions over the mel window, pooled to one code.

    The convolutions do not pad: each keeps only the columns that see feature frames alone (COLUMNS of
    the window's CONTEXT after the four layers, centred on it: the look-ahead is the window's). Such a
    column is the same in every window that holds it, so a stream computes each one once (ConvMemory).
    The first shipped network padded with zeros and kept all CONTEXT columns: the columns near the
    window's ends then belonged to that window alone, and a stream computed about three times the
    arithmetic a frame."""

    def __init__(self, k: int, width: int = 128, dropout: float = 0.2, conv_dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i, d in enumerate(DILATIONS):
            # the activation and its dropout are one module without weights, so every trained network's
            # weights keep the same names whatever the dropout it was trained with
            layers += [nn.Conv1d(N_MELS if i == 0 else width, width, 3, dilation=d),
                       nn.Sequential(nn.GELU(), nn.Dropout(conv_dropout)) if conv_dropout else nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * COLUMNS, 256),
                                  nn.GELU(), nn.Linear(256, k))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, CONTEXT, N_MELS) standardised log-mel windows → (B, K) mouth codes."""
        return self.head(self.net(windows.transpose(1, 2)))


class ConvMemory:
    """One stream's columns of AudioToMouth's convolutions, by absolute feature frame: a stream's
    consecutive windows (3.3 feature frames apart at 30 fps) share all but their last few columns, so each
    is computed once (per layer, the contiguous span [lo, lo + n) the latest window used, frame by row)."""

    def __init__(self):
        self.spans: dict[int, tuple[int, np.ndarray]] = {}      # layer → (lo, its columns from lo on)


_NO_SPAN = np.zeros((0, 0), np.float32)


@compiled
def _gelu(x):
    """GELU as torch's default (erf) computes it."""
    return 0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))


@compiled
def _conv_layer(h, lo, weight, bias, d, span_lo, span, out):
    """One convolution + GELU: out[j] (absolute feature frame lo + d + j) from input rows j, j + d, j + 2d
    of `h` (its row 0 is frame lo) by `weight` (3 * in, out), the first tap's rows first. Rows that `span`
    (the stream's earlier columns, from frame span_lo on) holds are copied, not computed. Plain loops, the
    output channels innermost: numba's matrix product ran a layer's four columns in 10 µs against these
    loops' 21, but took seconds to compile (2-core Intel Xeon at 2.1 GHz)."""
    start, width, inputs = lo + d, out.shape[1], h.shape[1]
    for j in range(len(out)):
        if span_lo <= start + j < span_lo + len(span):
            for o in range(width):
                out[j, o] = span[start + j - span_lo, o]
            continue
        for o in range(width):
            out[j, o] = bias[o]
        for k in range(3):
            for i in range(inputs):
                x = h[j + k * d, i]
                for o in range(width):
                    out[j, o] += x * weight[k * inputs + i, o]
        for o in range(width):
            out[j, o] = _gelu(out[j, o])


@compiled
def _gelu_in_place(x):
    for i in range(len(x)):
        x[i] = _gelu(x[i])


class StreamingNet:
    """AudioToMouth's forward pass for a stream's one or two windows at a time, compiled (numba): torch's
    per-call overhead was most of a frame's cost (3.1 ms a window on a 2-core AMD EPYC), and numpy's still
    most of the rest (0.71 ms a frame for the whole stream in numpy, 0.48 compiled: 2-core Intel Xeon at
    2.1 GHz). A convolution computes only the columns a window adds (_conv_layer); the columns lie frame
    by row, and the head's first weights are reordered to read them so, in one matrix product. With a
    ConvMemory, the columns a stream's earlier windows already gave are not computed again."""

    def __init__(self, net: AudioToMouth):
        convs = [m for m in net.net if isinstance(m, nn.Conv1d)]
        assert all(c.kernel_size[0] == 3 and c.padding[0] == 0 for c in convs)
        # (kernel * in, out): row k * in + i weighs tap k (x(t + k d)) of input channel i
        self.convs = [(np.ascontiguousarray(c.weight.detach().numpy().transpose(2, 1, 0).reshape(-1, len(c.weight))),
                       c.bias.detach().numpy().copy(), c.dilation[0]) for c in convs]
        (w1, self.b1), (self.w2, self.b2) = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                                             for m in net.head if isinstance(m, nn.Linear)]
        # nn.Flatten reads the columns channel-major; here they lie frame-major
        width = self.convs[-1][1].shape[0]
        self.w1 = np.ascontiguousarray(w1.reshape(len(w1), width, COLUMNS).transpose(0, 2, 1).reshape(len(w1), -1))

    def __call__(self, windows: np.ndarray, starts: np.ndarray | None = None,
                 memory: ConvMemory | None = None) -> np.ndarray:
        """(B, CONTEXT, N_MELS) standardised windows → (B, K) codes, as AudioToMouth gives them. `starts`:
        the absolute feature frame each window begins at, for `memory` (one stream's, windows in order)."""
        codes = []
        for b, window in enumerate(np.asarray(windows, np.float32)):
            hidden = self.w1 @ self._columns(window, 0 if memory is None else int(starts[b]), memory).ravel()
            hidden += self.b1
            _gelu_in_place(hidden)
            codes.append(self.w2 @ hidden + self.b2)
        return np.stack(codes) if codes else np.zeros((0, len(self.w2)), np.float32)

    def _columns(self, window: np.ndarray, start: int, memory: ConvMemory | None) -> np.ndarray:
        """The convolutions' (COLUMNS, width) output for one window (CONTEXT, N_MELS) whose first feature
        frame is `start`: per layer, the columns an earlier window of the stream gave are taken from
        `memory` and the rest computed (at 30 fps about 3.3 new columns a layer)."""
        h, lo = np.ascontiguousarray(window), start
        for layer, (weight, bias, d) in enumerate(self.convs):
            out = np.empty((len(h) - 2 * d, weight.shape[1]), np.float32)
            span_lo, span = memory.spans.get(layer, (0, _NO_SPAN)) if memory is not None else (0, _NO_SPAN)
            _conv_layer(h, lo, weight, bias, d, span_lo, span, out)
            if memory is not None:
                memory.spans[layer] = (lo + d, out)
            h, lo = out, lo + d
        return h


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
    _compiled: StreamingNet | None = field(default=None, repr=False, compare=False)

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
        """predict() for a stream's few windows, compiled (StreamingNet): the same codes, in a fraction of
        the time; with the stream's `memory` and each window's first feature frame, less still."""
        if self._compiled is None:
            self.net.eval()
            self._compiled = StreamingNet(self.net)
        return self.gated(self._compiled(windows, starts, memory), speech_gate(windows, PAST))

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
                            "train one with `callsynth audio2exp-train`",
                            keys=("k", "net", "mel_mean", "mel_std", "blink_code", "meta"))
    net = AudioToMouth(int(state["k"]))
    net.load_state_dict(state["net"])
    # the features' filterbank now (librosa's import: 2 s on a 2-core EPYC), not at the first audio of a
    # call that the voice drives
    mel_basis()
    model = Audio2ExpModel(net, state["mel_mean"].numpy(), state["mel_std"].numpy(),
                           state["blink_code"].numpy(), state["basis"], dict(state["meta"]),
                           hold_eyes=mouth_holding_eyes(basis) if basis is not None else None)
    # and the stream's compiled kernels (gates, running mean, network): loaded from numba's cache in 0.3 s,
    # compiled in about 3 s the first time on a machine (2-core Intel Xeon at 2.1 GHz), not at the first audio
    model.predict_few(np.repeat(model.silence[None, None], CONTEXT, axis=1))
    model.normaliser().apply(np.zeros((1, N_MELS), np.float32))
    return model


ASSETS = Path(__file__).parent / "assets"


def default_model_path(folder: Path = ASSETS) -> Path:
    """The model calls use when none is named: the newest in `folder`, where `callsynth audio2exp-train` puts
    what it trains. (The last by name was taken: a model trained there was used only when its digest happened
    to sort after the shipped one's.)"""
    found = sorted(folder.glob("audio2exp-*.pt"), key=lambda path: (path.stat().st_mtime, path.name))
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


__all__ = ["AudioToMouth", "Audio2ExpModel", "COLUMNS", "ConvMemory", "ModelError", "load_model", "windows_at",
           "frame_index_at", "PAST", "FUTURE", "CONTEXT", "LOOKAHEAD_MS", "FRAME_RATE", "SILENCE_LOG_MEL"]
