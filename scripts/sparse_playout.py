"""What the receiver shows when feature packets come far apart (the 16 kbps tier: one every 10 frames at 25
fps), against the face as the camera saw it, with and without the catch-up after concealed frames
(receiver.playout.CatchUp).

Each clip goes through the sender's own tracking and coding twice: every frame decoded as the receiver
would (the truth), and as a sender at one packet every N frames codes it (its blink timing too). Those
packets arrive 40 ms later with up to 10 ms of jitter (seeded) and are played out through the receiver's
jitter buffer with the call's defaults (adaptive delay, at most CALL.max_playout_delay_ms), frames shown 30
a second. For each frame shown, the face's 478 landmarks in the 256-px crop against the truth's at that
moment: the share of frames concealed, the mean error (px), how far the shown face moves from one frame to
the next (p95 and largest) beside how far the truth moves, and the blinks shown as face_metrics.py counts
them. No timing: the figures do not depend on the machine.

    python scripts/sparse_playout.py [CLIP ...] [--every N] [--loss P] [--frames 500] [--plot out/sparse_playout.png]

`--recordings OUT.mp4 ...` measures receivers' recordings instead (a call's `received.mp4`: the face tracked
in every frame, without smoothing): how far the face moves from one frame to the next, in pixels of the
recording.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.budget import plan
from callsynth.face.basis import load_basis
from callsynth.face.code import FaceCoder
from callsynth.face.regions import eye_openness
from callsynth.face.still import still_of
from callsynth.media import iter_timed_frames, video_info
from callsynth.split import data_root
from callsynth.wire import Codec
from receiver.jitter import JitterBuffer
from receiver.playout import CATCH_UP_MS
from sender.features import FeatureEncoder

SHOW_FPS = 30.0
TRANSIT_MS, JITTER_MS = 40.0, 10.0
LIP = 14                  # the lower lip's middle: the plot follows its height


def coded(clip: Path, basis, frames: int, every: float | None):
    """The clip through the sender's tracking and coding twice: every frame's decoded features (the truth),
    and the packets a sender at one every `every` frames sends (None: the 16 kbps plan's at the clip's frame
    rate), its blink timing included; the coder that draws them, and `every`."""
    fps = video_info(clip).fps
    every = every or plan(16.0, fps).send_every
    still = still_of(clip)
    encoders = [FeatureEncoder(basis, still, fps=fps, send_every=n, references=False) for n in (1, every)]
    codec, truth, sent = Codec(basis), [], []
    try:
        for index, (at, frame) in enumerate(iter_timed_frames(clip)):
            if index >= frames:
                break
            for encoder, out in zip(encoders, (truth, sent)):
                packet = encoder.process(frame, int(at * 1000)).packet
                if packet is not None:
                    out.append(codec.decode(packet))
    finally:
        for encoder in encoders:
            encoder.close()
    return truth, sent, FaceCoder(basis, still.landmarks), every


def played(sent, coder, catch_up_ms: float, k: int, end_ms: float, loss: float = 0.0, seed: int = 0):
    """(shown time ms, landmarks shown, concealed) of each frame shown up to `end_ms`; `loss`: the share of
    packets lost on the way (at random, seeded; the first always arrives)."""
    rng, losses = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    kept = [f for i, f in enumerate(sent) if i == 0 or losses.uniform() >= loss]
    arrivals = sorted(((f.capture_ms + TRANSIT_MS + rng.uniform(0, JITTER_MS), i, f) for i, f in enumerate(kept)),
                      key=lambda a: a[:2])
    jitter = JitterBuffer(sent[0].pose, len(sent[0].expression), catch_up_ms=catch_up_ms)
    out, now, next_arrival, start = [], arrivals[0][0], 0, sent[0].capture_ms
    while now < end_ms + 500:
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= now:
            jitter.push(arrivals[next_arrival][2], int(arrivals[next_arrival][0]))
            next_arrival += 1
        playout = jitter.displayed_ms(jitter.playout_ms(now))
        state, concealed = jitter.state_at(playout)
        now += 1000 / SHOW_FPS
        if state is not None and start <= playout <= end_ms:
            out.append((playout, coder.landmarks(state[0], state[1][:k])[:, :2], concealed))
    return out


def measure(features, coder, shown, k: int) -> dict:
    times = np.array([f.capture_ms for f in features], float)
    truth = np.stack([coder.landmarks(f.pose, f.expression[:k])[:, :2] for f in features])
    at = np.array([t for t, _, _ in shown])
    j = np.clip(np.searchsorted(times, at), 1, len(times) - 1)
    w = ((at - times[j - 1]) / np.maximum(1, times[j] - times[j - 1]))[:, None, None]
    true_then = (1 - w) * truth[j - 1] + w * truth[j]
    faces = np.stack([lm for _, lm, _ in shown])
    step = np.abs(np.diff(faces, axis=0)).mean(axis=(1, 2))
    true_step = np.abs(np.diff(true_then, axis=0)).mean(axis=(1, 2))
    # blinks as the evaluator counts them (face_metrics.py eyes): frames where the camera's eyes are under
    # 60 % of their median openness, and the share of them where the shown face's are under 60 % of its own
    eyes = np.array([eye_openness(f).mean() for f in faces])
    true_eyes = np.array([eye_openness(f).mean() for f in true_then])
    blink = true_eyes < 0.6 * np.median(true_eyes)
    return {"frames": len(shown), "concealed": float(np.mean([c for _, _, c in shown])),
            "error_px": float(np.abs(faces - true_then).mean()),
            "blink_frames": int(blink.sum()),
            "blinks_shown": float(np.mean(eyes[blink] < 0.6 * np.median(eyes))) if blink.any() else float("nan"),
            "step_p95": float(np.percentile(step, 95)), "step_max": float(step.max()),
            "true_step_p95": float(np.percentile(true_step, 95)), "true_step_max": float(true_step.max()),
            "lip_shown": faces[:, LIP, 1], "lip_true": true_then[:, LIP, 1], "at": at,
            "concealed_each": np.array([c for _, _, c in shown])}


def recorded_steps(path: Path) -> np.ndarray:
    """How far the face moves from each frame of a recording to the next (mean over its landmarks, px)."""
    from callsynth.face.tracker import FaceTracker
    from callsynth.media import iter_frames

    faces = []
    with FaceTracker(video=True, smoothing=False) as tracker:
        for frame in iter_frames(path):
            result = tracker.process(frame)
            faces.append(result.landmarks[:, :2] if result.found else None)
    return np.array([np.abs(b - a).mean() for a, b in zip(faces, faces[1:]) if a is not None and b is not None])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path,
                        help="video clips (default: two interview clips and obama.mp4 of ../shared/data)")
    parser.add_argument("--every", type=float, default=None,
                        help="a packet every N frames (default: the 16 kbps plan's at the clip's frame rate)")
    parser.add_argument("--frames", type=int, default=500, help="frames of each clip, from its start")
    parser.add_argument("--loss", type=float, default=0.0, help="lose this %% of packets at random (seeded)")
    parser.add_argument("--catch-up-ms", type=float, default=CATCH_UP_MS,
                        help=f"the catch-up measured against none (default {CATCH_UP_MS:g}, the receiver's)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="draw the lower lip's height over the first clip's first 4 s, shown and true")
    parser.add_argument("--recordings", nargs="+", type=Path, default=None,
                        help="measure these receivers' recordings instead (see above)")
    args = parser.parse_args()
    if args.recordings:
        print(f"{'recording':<40} {'moves':>6} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} {'over 4 px':>9}")
        for path in args.recordings:
            if not path.exists():
                parser.error(f"{path}: no such recording")
            steps = recorded_steps(path)
            if not steps.size:
                print(f"{str(path):<40} no face tracked in two frames in a row")
                continue
            print(f"{str(path):<40} {steps.size:>6} {np.median(steps):>6.2f} {np.percentile(steps, 95):>6.2f} "
                  f"{np.percentile(steps, 99):>6.2f} {steps.max():>6.2f} {np.mean(steps > 4):>9.1%}")
        return 0
    clips = args.clips or [data_root() / f for f in ("video/hdtf/WDA_KatieHill_000.mp4", "video/pcavs/00067.mp4",
                                                     "video/lia_vox/obama.mp4")]
    for clip in clips:
        if not clip.exists():
            parser.error(f"{clip}: no such clip")
    basis = load_basis(None)
    print(f"{'clip':<26} {'every':>5} {'catch-up':>8} {'frames':>6} {'concealed':>9} {'error px':>8} "
          f"{'step p95':>8} {'max':>6} {'true p95':>8} {'max':>6} {'blinks shown':>14}")
    drawn = {}
    for clip in clips:
        truth, sent, coder, every = coded(clip, basis, args.frames, args.every)
        if len(truth) < 20 or len(sent) < 3:
            print(f"{clip.name}: a face in fewer than 20 frames, left out")
            continue
        for catch_up in (0.0, args.catch_up_ms):
            m = measure(truth, coder, played(sent, coder, catch_up, basis.k, truth[-1].capture_ms, args.loss / 100),
                        basis.k)
            blinks = f"{m['blinks_shown']:.0%} of {m['blink_frames']}" if m["blink_frames"] else "no blink"
            print(f"{clip.name:<26} {every:>5.3g} {catch_up:>6.0f}ms {m['frames']:>6} {m['concealed']:>9.0%} "
                  f"{m['error_px']:>8.2f} {m['step_p95']:>8.2f} {m['step_max']:>6.2f} {m['true_step_p95']:>8.2f} "
                  f"{m['true_step_max']:>6.2f} {blinks:>14}")
            if clip == clips[0]:
                drawn[catch_up] = m
    if args.plot and drawn:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 3.5))
        first = next(iter(drawn.values()))
        t = (first["at"] - first["at"][0]) / 1000
        keep = t <= 4
        ax.plot(t[keep], first["lip_true"][keep], color="black", lw=2, label="as the camera saw it")
        for (catch_up, m), colour in zip(drawn.items(), ("tab:red", "tab:blue")):
            ax.plot(t[keep], m["lip_shown"][keep], color=colour, lw=1.2, marker=".",
                    label=f"shown, catch-up {catch_up:g} ms")
        hidden = first["concealed_each"][keep]
        ax.fill_between(t[keep], 0, 1, where=hidden, transform=ax.get_xaxis_transform(), color="0.9",
                        label="concealed")
        ax.invert_yaxis()
        ax.set_xlabel("s")
        ax.set_ylabel("lower lip height (px, down)")
        ax.set_title(f"{clips[0].name}: a packet every {args.every or 'N (16 kbps plan)'} frames")
        ax.legend(loc="upper right", fontsize=8)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
