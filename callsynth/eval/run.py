"""`callsynth eval`: self-reenactment of each clip (still = first frame) beside codecs at low bitrates.

Every method is judged on the same 256x256 stable crops of the real frames: PSNR, SSIM and landmark NME
(MediaPipe on the method's frame against MediaPipe on the real frame, % of inter-ocular distance).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..face.basis import ExpressionBasis
from ..face.still import NoFaceError, prepare_still
from ..media import MediaError, iter_frames, read_still, video_info
from ..budget import frames_per_packet
from ..reenact import ReenactStats, reenact
from .codecs import CODECS, DEFAULT_KBPS, encode_decode
from .metrics import LandmarkStream, eye_and_mouth, nme, picked_frames, psnr, ssim
from .report import write_report

# send every Nth frame: 30, 15 and 10 packets/s at 30 fps (a faster clip at the same packet rates:
# budget.frames_per_packet)
CALLSYNTH_RATES = (1, 2, 3)
GENERATOR_RATE = 2           # the generator is measured at the default packet rate
EYE_MOUTH_KEYS = ("openness_r", "blink_recall", "gaze_r", "teeth_share_truth", "teeth_share_out",
                  "interior_l1")
MOUTH = [0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
         269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415]


def mouth_error(ref: np.ndarray, out: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean absolute pixel error (0-255) in the box around the real frame's lips, grown by 30 %."""
    pts = np.asarray(landmarks)[MOUTH, :2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    gx, gy = 0.3 * (x1 - x0), 0.3 * (y1 - y0)
    h, w = ref.shape[:2]
    xa, xb = int(max(0, x0 - gx)), int(min(w, x1 + gx + 1))
    ya, yb = int(max(0, y0 - gy)), int(min(h, y1 + gy + 1))
    if xb <= xa or yb <= ya:
        return float("nan")
    return float(np.abs(ref[ya:yb, xa:xb].astype(np.float32) - out[ya:yb, xa:xb].astype(np.float32)).mean())


def score(ref: list[np.ndarray], ref_lm: list, out: list[np.ndarray], fps: float,
          ref_static: list | None = None) -> dict:
    """Mean PSNR, SSIM and NME of out against ref; frames where ref has a face but out has none count.
    Eyes, gaze and teeth are measured on landmarks found frame by frame in image mode (`ref_static` for
    ref), as face_metrics.py finds them: video mode's tracking carries lids over from the frame before."""
    stream = LandmarkStream(fps)
    errors, lost, outs = [], 0, []
    try:
        for truth, frame in zip(ref_lm, out):
            found = stream(frame)
            outs.append(found)
            if truth is None:
                continue
            if found is None:
                lost += 1
            else:
                errors.append(nme(found, truth))
    finally:
        stream.close()
    faces = sum(t is not None for t in ref_lm)
    mouths = [mouth_error(a, b, t) for a, b, t in zip(ref, out, ref_lm) if t is not None]
    return {
        "mouth_l1": float(np.mean(mouths)) if mouths else float("nan"),
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(ref, out)])),
        "ssim": float(np.mean([ssim(a, b) for a, b in zip(ref, out)])),
        "nme": float(np.mean(errors)) if errors else float("nan"),
        "face_lost_pct": 100.0 * lost / faces if faces else 0.0,
        **eye_and_mouth(ref_static if ref_static is not None else ref_lm,
                        static_landmarks(out) if ref_static is not None else outs, ref, out),
    }


def static_landmarks(frames: list[np.ndarray]) -> list:
    """MediaPipe on each frame on its own (image mode), None where it finds no face."""
    from ..face.tracker import FaceTracker

    with FaceTracker(video=False, smoothing=False) as tracker:
        return [tracker.process(frame).landmarks for frame in frames]


def code_nme(still, ref_lm: list, basis: ExpressionBasis) -> float:
    """Landmark NME of the code alone: the real frame's landmarks → pose + code → wire quantisation →
    landmarks again, against the real ones. What the code and the wire lose; the rest of the renderer's
    NME is lost in rendering."""
    from ..face.code import FaceCoder
    from ..wire import Codec, FrameFeatures

    coder, codec, errors = FaceCoder(basis, still.landmarks), Codec(basis), []
    for i, truth in enumerate(ref_lm):
        if truth is None:
            continue
        pose, code = coder.expression(truth)
        sent = codec.roundtrip(FrameFeatures(i, i, pose, code[:basis.k], gaze=code[basis.k:]))
        errors.append(nme(coder.landmarks(sent.pose, sent.expression), truth))
    return float(np.mean(errors)) if errors else float("nan")


def write_strip(path: Path, ref: list, columns: dict[str, list], picks: dict[str, int]) -> None:
    """One row per picked frame: truth | each column (warp, output), labelled."""
    import cv2

    rows = []
    for what, index in picks.items():
        tiles = [ref[index]] + [frames[index] for frames in columns.values()]
        row = np.hstack(tiles).copy()
        cv2.putText(row, f"{what} (frame {index})", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        for j, name in enumerate(["truth", *columns]):
            cv2.putText(row, name, (j * ref[0].shape[1] + 4, ref[0].shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (255, 255, 0), 1)
        rows.append(row)
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.vstack(rows)[:, :, ::-1])


def evaluate_clip(path: Path, basis: ExpressionBasis, codecs: list[str], kbps: tuple,
                  max_frames: int | None, progress: tqdm, generator: str | None = None,
                  strip: Path | None = None, model: str | None = None) -> list[dict]:
    """Rows of figures for one clip; `strip`: where to write its truth | warp | output picture."""
    fps = video_info(path).fps
    # decoded again for each run rather than held: a minute of 1080p is 9 GB of frames, past what a
    # laptop has; the 256x256 crops are what is kept
    still = prepare_still(read_still(path), source=f"{path.name} first frame")
    rows, ref, shown = [], None, {}
    for rate in CALLSYNTH_RATES:
        send_every = frames_per_packet(fps, rate)
        stats = ReenactStats(fps, send_every)
        pairs = list(reenact(still, iter_frames(path, max_frames), fps, basis, send_every=send_every,
                             stats=stats))
        if rate == GENERATOR_RATE:
            shown["warp"] = [o for _, o in pairs]
        if ref is None:
            ref = [r for r, _ in pairs]
            stream = LandmarkStream(fps)
            ref_lm = [stream(r) for r in ref]
            stream.close()
            ref_static = static_landmarks(ref)
        summary = stats.summary()
        setting = "every frame" if rate == 1 else f"1 packet / {rate} frames"
        rows.append({"method": "callsynth-warp", "setting": setting, "packets_per_s": fps / send_every,
                     "kbps": summary["payload_kbps"], "kbps_at_30fps": summary["payload_kbps_at_30fps"],
                     "reference_bytes": summary["reference_bytes"],
                     "code_nme": code_nme(still, ref_lm, basis),
                     "references_sent": summary["references_sent"],
                     **score(ref, ref_lm, [o for _, o in pairs], fps, ref_static)})
        progress.update(1)
    if generator is not None:
        from receiver.renderer import DEFAULT_MODEL, Renderers

        model = model or DEFAULT_MODEL
        send_every = frames_per_packet(fps, GENERATOR_RATE)
        stats = ReenactStats(fps, send_every)
        pairs = list(reenact(still, iter_frames(path, max_frames), fps, basis, send_every=send_every, stats=stats,
                             renderers=Renderers(basis, model, generator or None)))
        summary = stats.summary()
        shown[model] = [o for _, o in pairs]
        rows.append({"method": f"callsynth-{model}", "setting": f"1 packet / {GENERATOR_RATE} frames",
                     "packets_per_s": fps / send_every, "kbps": summary["payload_kbps"],
                     "kbps_at_30fps": summary["payload_kbps_at_30fps"],
                     "render_ms": summary["timings_ms"]["render"]["mean"],
                     **score(ref, ref_lm, [o for _, o in pairs], fps, ref_static)})
        progress.update(1)
    if strip is not None:
        write_strip(strip, ref, shown, picked_frames(ref_lm))
    for codec in codecs:
        for target in kbps:
            decoded, measured = encode_decode(ref, fps, codec, target)
            rows.append({"method": codec, "setting": f"target {target} kbps", "kbps": measured,
                         **score(ref, ref_lm, decoded, fps, ref_static)})
            progress.update(1)
    for row in rows:
        row.update(clip=str(path), frames=len(ref), fps=fps)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Average each (method, setting) over clips."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["setting"])].append(row)
    out = []
    for (method, setting), items in groups.items():
        entry = {"method": method, "setting": setting, "clips": len(items)}
        for key in ("kbps", "kbps_at_30fps", "psnr", "ssim", "nme", "face_lost_pct", "mouth_l1", "render_ms",
                    *EYE_MOUTH_KEYS, "reference_bytes", "code_nme"):
            vals = [r[key] for r in items if key in r and not np.isnan(r[key])]
            if vals:
                entry[key] = float(np.mean(vals))
        # Blink recall over all blink frames of all clips: a clip with one blinking frame is not a clip's
        # worth of evidence.
        blinks = [(r["blink_recall"], r["blink_frames"]) for r in items
                  if r.get("blink_frames") and not np.isnan(r.get("blink_recall", np.nan))]
        if blinks:
            entry["blink_recall"] = float(sum(v * n for v, n in blinks) / sum(n for _, n in blinks))
            entry["blink_frames"] = int(sum(n for _, n in blinks))
        out.append(entry)
    return out


def run_eval(clips: list[Path], out_dir: Path, basis: ExpressionBasis, codecs: list[str],
             kbps: tuple = DEFAULT_KBPS, max_frames: int | None = None, generator: str | None = None,
             model: str | None = None) -> dict:
    """`generator`: None for warp only, "" for the shipped network of `model` (default: the call's
    default renderer), or a file of it.
    A clip that cannot be read or whose first frame shows no face is skipped with its reason (in the
    report), so that one bad file does not throw away the others' work; none usable is an error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_clip = len(CALLSYNTH_RATES) + (generator is not None) + len(codecs) * len(kbps)
    rows, done, skipped = [], [], []
    with tqdm(total=len(clips) * per_clip, desc="eval", unit="run") as progress:
        for clip in clips:
            progress.set_postfix_str(Path(clip).name)
            try:
                rows += evaluate_clip(Path(clip), basis, codecs, kbps, max_frames, progress, generator,
                                      strip=out_dir / "strips" / f"{Path(clip).stem}.jpg", model=model)
                done.append(str(clip))
            except (MediaError, NoFaceError) as exc:
                skipped.append({"clip": str(clip), "reason": str(exc)})
                progress.write(f"eval: skipping {clip}: {exc}", file=sys.stderr)
                progress.total -= per_clip
                progress.refresh()
    if not rows:
        raise ValueError("no clip could be evaluated: " + "; ".join(s["reason"] for s in skipped))
    report = {"basis": basis.name, "codecs": {c: CODECS[c].label for c in codecs},
              "clips": done, "skipped": skipped, "summary": summarise(rows), "per_clip": rows}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    write_report(report, out_dir)
    return report
