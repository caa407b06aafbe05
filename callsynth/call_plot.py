"""One picture of a call: glass-to-glass latency of every frame shown, with the concealed ones marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_call(frames_csv: Path, out_png: Path, title: str = "") -> None:
    data = np.genfromtxt(frames_csv, delimiter=",", names=True)
    if data.size < 2:
        return
    t = (data["shown_ms"] - data["shown_ms"][0]) / 1000
    latency, concealed = data["latency_ms"], data["concealed"] > 0
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    ax.plot(t, latency, lw=1, color="steelblue", label="frame from a received packet")
    ax.scatter(t[concealed], latency[concealed], s=8, color="darkorange",
               label="concealed (next packet late or lost)", zorder=3)
    for q, style in ((50, "--"), (95, ":")):
        ax.axhline(np.percentile(latency, q), color="grey", ls=style, lw=0.8,
                   label=f"p{q} {np.percentile(latency, q):.0f} ms")
    ax.set_xlabel("call time, s")
    ax.set_ylabel("glass-to-glass latency, ms")
    ax.set_ylim(0, max(160, latency.max() * 1.1))
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    gaps = np.diff(data["shown_ms"])
    hist.hist(gaps, bins=30, color="seagreen")
    hist.set_xlabel("time between shown frames, ms")
    hist.set_title(f"{1000 / np.mean(gaps):.1f} fps", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
