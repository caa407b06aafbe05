"""The evaluator's markdown table and rate–distortion plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator  # noqa: E402


def _fmt(value, spec):
    """A figure, or – where none could be measured (None; NaN in reports before they wrote null)."""
    return "–" if value is None or value != value else format(value, spec)


def floors(summary: list[dict]) -> list[dict]:
    """Each codec's lowest measured bitrate, and callsynth at every packet rate."""
    rows = [r for r in summary if r["method"].startswith("callsynth")]
    for method in dict.fromkeys(r["method"] for r in summary if not r["method"].startswith("callsynth")):
        rows.append(min((r for r in summary if r["method"] == method), key=lambda r: r["kbps"]))
    return rows


def markdown(report: dict) -> str:
    head = ("| method | setting | payload kbps (measured) | kbps at 30 fps | landmark NME % | SSIM | "
            "PSNR dB | mouth L1 | face lost % |\n|---|---|---|---|---|---|---|---|---|\n")

    def table(rows):
        return head + "".join(
            f"| {r['method']} | {r['setting']} | {r['kbps']:.2f} | {_fmt(r.get('kbps_at_30fps'), '.2f')} "
            f"| {_fmt(r.get('nme'), '.2f')} | {_fmt(r.get('ssim'), '.3f')} | {_fmt(r.get('psnr'), '.2f')} "
            f"| {_fmt(r.get('mouth_l1'), '.2f')} | {_fmt(r.get('face_lost_pct'), '.1f')} |\n" for r in rows)

    names = report.get("names") or {c: Path(c).stem for c in report["clips"]}   # reports before names
    per_clip = "| clip | method | setting | payload kbps | kbps at 30 fps | landmark NME % | code alone NME % " \
               "| SSIM | PSNR dB | mouth L1 |\n|---|---|---|---|---|---|---|---|---|---|\n" + "".join(
                   f"| {names[r['clip']]} | {r['method']} | {r['setting']} | {r['kbps']:.2f} "
                   f"| {r['kbps_at_30fps']:.2f} | {_fmt(r.get('nme'), '.2f')} | {_fmt(r.get('code_nme'), '.2f')} "
                   f"| {_fmt(r.get('ssim'), '.3f')} "
                   f"| {_fmt(r.get('psnr'), '.2f')} | {_fmt(r.get('mouth_l1'), '.2f')} |\n"
                   for r in report["per_clip"] if r["method"].startswith("callsynth"))
    eyes_head = ("| clip | method | setting | eye openness r | blink recall | gaze r | teeth share out / truth "
                 "| mouth interior L1 | reference bytes |\n|---|---|---|---|---|---|---|---|---|\n")

    def eye_row(name, r):
        return (f"| {name} | {r['method']} | {r['setting']} | {_fmt(r.get('openness_r'), '.2f')} "
                f"| {_fmt(r.get('blink_recall'), '.0%')} | {_fmt(r.get('gaze_r'), '.2f')} "
                f"| {_fmt(r.get('teeth_share_out'), '.1%')} / {_fmt(r.get('teeth_share_truth'), '.1%')} "
                f"| {_fmt(r.get('interior_l1'), '.1f')} | {_fmt(r.get('reference_bytes'), '.0f')} |\n")

    eyes = eyes_head + "".join(eye_row("mean", r) for r in report["summary"]
                               if r["method"].startswith("callsynth")) + "".join(
        eye_row(names[r["clip"]], r) for r in report["per_clip"] if r["method"].startswith("callsynth"))
    strips = "\n".join(f"![{names[c]}](strips/{names[c]}.jpg)" for c in report["clips"])
    clips = "\n".join(f"- {c}" for c in report["clips"])
    if report.get("skipped"):
        clips += "\n\nSkipped (not in the means):\n\n" + "\n".join(
            f"- {s['clip']}: {s['reason']}" for s in report["skipped"])
    codecs = "\n".join(f"- {k}: {v}" for k, v in report["codecs"].items())
    stopped = report.get("interrupted")
    if stopped:
        clips += "\n\nNot evaluated (the run was interrupted):\n\n" + "\n".join(
            f"- {c}" for c in stopped["not_evaluated"])
    return ("# callsynth evaluation\n\n"
            + (f"**Interrupted** (Ctrl-C) after {stopped['clips_done']} of {stopped['clips']} clips: the means "
               "are over those alone.\n\n" if stopped else "")
            + f"Basis: {report['basis']}. Means over {len(report['clips'])} clips "
            + "(self-reenactment, still = first frame; 256x256 stable crops).\n\n"
            f"## At each codec's floor\n\n{table(floors(report['summary']))}\n"
            f"## All settings\n\n{table(report['summary'])}\n"
            f"## callsynth per clip\n\n\"Code alone\": the real frame's landmarks through the code and the wire's "
            f"quantisation and back, against themselves: what the 23 coefficients and their bits lose; the rest "
            f"of the landmark error is lost in rendering.\n\n{per_clip}\n"
            f"## Eyes, gaze and mouth interior\n\nBlink recall: of the real frames whose eye openness is "
            f"under 60 % of the clip's median, the share where the output's is under 60 % of its own (the "
            f"mean rows pool every clip's blink frames). Teeth: "
            f"on the real open-mouth frames (lip gap ≥ 8 % of the iris distance), the bright share inside the "
            f"real inner-lip outline, and the mean absolute error there (0–255).\n\n{eyes}\n"
            f"## Deepest blink, widest mouth, largest turn (truth | warp | output)\n\n{strips}\n\n"
            f"## Clips\n\n{clips}\n\n## Codecs\n\n{codecs}\n")


def plot(report: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = dict.fromkeys(r["method"] for r in report["summary"])
    for method in methods:
        rows = sorted((r for r in report["summary"] if r["method"] == method), key=lambda r: r["kbps"])
        style = dict(marker=".", lw=1.2)
        if method.startswith("callsynth"):
            style = dict(marker="o" if method == "callsynth-warp" else "*", lw=2.5, ms=9,
                         color="crimson" if method == "callsynth-warp" else "navy")
        label = report["codecs"].get(method, method)
        for ax, key in zip(axes, ("nme", "ssim")):
            pts = [(r["kbps"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), label=label, **style)
    for ax, title in zip(axes, ("landmark NME, % of inter-ocular (lower is better)",
                                "SSIM (higher is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("measured payload bitrate, kbps")
        ax.set_title(title, fontsize=10)
        ax.axvline(4, color="grey", ls="--", lw=0.8)
        ax.xaxis.set_major_locator(FixedLocator([1, 2, 4, 8, 16, 32, 64, 128]))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Rate–distortion over {len(report['clips'])} validation clips", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> None:
    (out_dir / "report.md").write_text(markdown(report))
    plot(report, out_dir / "rate_distortion.png")
