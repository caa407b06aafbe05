"""One picture of how the voice drives the mouth: each clip's lip gap as the video shows it and as audio2exp
predicts it from the sound, over time, with the clip's Pearson r (what `audio2exp-eval` averages) in its
title. Where a table says 0.30, the picture shows whether the model misses the timing, the size of the
openings, or openings made in silence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass
class MouthCurve:
    name: str
    times: np.ndarray          # s, one per video frame
    true: np.ndarray           # lip gap of the tracked video
    predicted: np.ndarray      # lip gap of audio2exp's code
    valid: np.ndarray          # frames with a tracked face
    shaded: np.ndarray | None = None   # frames to shade (quiet ones, say)
    shaded_label: str = ""


def speech_curves(gaps: dict) -> list[MouthCurve]:
    """audio2exp.evaluate's gaps ({clip: (MouthGaps, fps)}) as curves, in the clips' order."""
    return [MouthCurve(Path(clip).name, np.arange(len(g.valid)) / fps, g.true, g.predicted, g.valid)
            for clip, (g, fps) in gaps.items()]


def plot_mouth_curves(curves: list[MouthCurve], out_png: Path, title: str = "") -> Path:
    """One panel per clip, the tracked and predicted lip gap over time; returns `out_png`."""
    fig, axes = plt.subplots(len(curves), 1, figsize=(12, 2.2 * len(curves) + 0.4), squeeze=False)
    for ax, c in zip(axes[:, 0], curves):
        if c.shaded is not None:
            ax.fill_between(c.times, 0, 1, where=c.shaded, transform=ax.get_xaxis_transform(), color="0.9",
                            label=c.shaded_label)
        v = c.valid
        r = float(np.corrcoef(c.true[v], c.predicted[v])[0, 1]) if v.sum() > 2 else float("nan")
        ax.plot(c.times, np.where(v, c.true, np.nan), lw=1.2, label="tracked video")
        ax.plot(c.times, c.predicted, lw=1.2, label="audio2exp")
        ax.set_title(f"{c.name}: r {r:.2f}", fontsize=9)
        ax.set_ylabel("lip gap")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("s")
    if title:
        fig.suptitle(title, fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)
    fig.savefig(out_png, dpi=64)
    plt.close(fig)
    return out_png
