"""`callsynth eval`: self-reenactment of each clip (still = first frame) beside codecs at low bitrates.

Every method is judged on the same 256x256 stable crops of the real frames: PSNR, SSIM and landmark NME
(MediaPipe on the method's frame against MediaPipe on the real frame, % of inter-ocular distance).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..face.basis import ExpressionBasis
from ..face.still import NoFaceError, prepare_still
from ..json_text import to_json
from ..media import MediaError, iter_frames, moving_video_info, read_still
from ..budget import frames_per_packet
from ..reenact import ReenactStats, reenact
from ..tool_options import TOOLS
from .codecs import CODECS, encode_decode
from .metrics import FrameLandmarks, eye_figures, mouth_figures, mouth_interior, nme, picked_frames, psnr, ssim
from .report import write_report

# as often as every Nth frame of a 30 fps camera: 30, 15 and 10 packets/s (every frame, at most; a clip of
# another frame rate at the same packet rates: budget.frames_per_packet)
CALLSYNTH_RATES = (1, 2, 3)
GENERATOR_RATE = 2           # the generator is measured at the default packet rate
# the strip's picked frames are known from the first run's truth, and kept from the later runs' outputs
assert CALLSYNTH_RATES[0] != GENERATOR_RATE
EYE_MOUTH_KEYS = ("openness_r", "blink_recall", "gaze_r", "teeth_share_truth", "teeth_share_out",
                  "interior_l1")
MOUTH = [0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
         269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415]


def setting_name(rate: int) -> str:
    """A packet rate's name in the report: every frame, or packets a second (budget.frames_per_packet)."""
    return "every frame" if rate == 1 else f"{30 / rate:g} packets/s"


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


class RunScore:
    """One method's figures against the real clip, taken a frame at a time, so that no run's frames are
    kept but those the strip shows (a minute of a clip's 256² crops is 0.35 GB a run; every run's were
    held until the report). PSNR, SSIM, the lips' box error, and on both modes' landmarks (FrameLandmarks)
    NME, eyes, gaze and teeth. A frame whose truth has a face but the method's has none counts as lost."""

    def __init__(self, fps: float, keep: set[int] = frozenset()):
        self.landmarks = FrameLandmarks(fps)
        self.keep, self.kept = keep, {}
        self.errors, self.lost, self.faces, self.mouths, self.psnrs, self.ssims = [], 0, 0, [], [], []
        self.truths, self.outs, self.interiors = [], [], []

    def add(self, real: np.ndarray, made: np.ndarray, truth, truth_static) -> None:
        """The method's frame `made` against the real crop `real` (landmarks `truth` in video mode and
        `truth_static` in image mode, None where there is no face)."""
        if len(self.psnrs) in self.keep:
            self.kept[len(self.psnrs)] = made
        found, found_static = self.landmarks(made)
        if truth is not None:
            self.faces += 1
            if found is None:
                self.lost += 1
            else:
                self.errors.append(nme(found, truth))
            self.mouths.append(mouth_error(real, made, truth))
        self.psnrs.append(psnr(real, made))
        self.ssims.append(ssim(real, made))
        self.truths.append(truth_static)
        self.outs.append(found_static)
        self.interiors.append(mouth_interior(truth_static, real, made))

    def __enter__(self) -> "RunScore":
        return self

    def __exit__(self, *exc) -> None:
        self.landmarks.__exit__(*exc)

    def result(self) -> dict:
        return {
            "mouth_l1": float(np.mean(self.mouths)) if self.mouths else float("nan"),
            "psnr": float(np.mean(self.psnrs)),
            "ssim": float(np.mean(self.ssims)),
            "nme": float(np.mean(self.errors)) if self.errors else float("nan"),
            "face_lost_pct": 100.0 * self.lost / self.faces if self.faces else 0.0,
            **eye_figures(self.truths, self.outs),
            **mouth_figures(self.interiors),
        }


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
        sent = codec.roundtrip(FrameFeatures.carrying(i, pose, code, basis.k))
        errors.append(nme(coder.landmarks(sent.pose, sent.expression), truth))
    return float(np.mean(errors)) if errors else float("nan")


def write_strip(path: Path, ref: list, columns: dict[str, dict], picks: dict[str, int]) -> None:
    """One row per picked frame: truth | each column (warp, output: its frames by index), labelled."""
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
                  max_frames: int | None, progress: tqdm, renderers=None,
                  strip: Path | None = None) -> list[dict]:
    """Rows of figures for one clip; `renderers`: the neural renderer's (receiver.renderer.Renderers, its
    networks loaded once for every clip), None for the warp alone; `strip`: where to write its truth |
    warp | output picture."""
    # a picture (FFmpeg's one-frame video) scored one frame and gave a codec's kbps of one keyframe
    fps = moving_video_info(path, ": a clip to reenact must move").fps
    # decoded again for each run rather than held (a minute of 1080p is 9 GB of frames), and each run
    # scored as its frames come; what is kept is the truth's 256x256 crops (the codecs encode them) and
    # landmarks
    still = prepare_still(read_still(path), source=f"{path.name} first frame")
    rows, ref, ref_lm, ref_static, picks, shown = [], [], [], [], {}, {}

    def run(send_every: int, built_by=None) -> tuple[dict, dict, dict]:
        """Reenact the clip at one packet every `send_every` frames by `built_by`'s renderer (None: the
        warp): (its stats summary, its figures, its frames the strip shows)."""
        stats = ReenactStats(fps, send_every)
        first = not ref
        with FrameLandmarks(fps) if first else nullcontext() as truth, RunScore(fps, set(picks.values())) as scorer:
            for i, (real, made) in enumerate(reenact(still, iter_frames(path, max_frames), fps, basis,
                                                     send_every=send_every, stats=stats, renderers=built_by)):
                if first:
                    ref.append(real)
                    found, found_static = truth(real)
                    ref_lm.append(found)
                    ref_static.append(found_static)
                scorer.add(ref[i], made, ref_lm[i], ref_static[i])
            figures = scorer.result()
        if first:
            picks.update(picked_frames(ref_lm))
        return stats.summary(), figures, scorer.kept

    for rate in CALLSYNTH_RATES:
        send_every = frames_per_packet(fps, rate)
        summary, figures, kept = run(send_every)
        if rate == CALLSYNTH_RATES[0]:
            coded = code_nme(still, ref_lm, basis)      # the truth's landmarks through the code: once a clip
        if rate == GENERATOR_RATE:
            shown["warp"] = kept
        rows.append({"method": "callsynth-warp", "setting": setting_name(rate),
                     "packets_per_s": fps / send_every,
                     "kbps": summary["payload_kbps"], "kbps_at_30fps": summary["payload_kbps_at_30fps"],
                     "reference_bytes": summary["reference_bytes"],
                     "code_nme": coded,
                     "references_sent": summary["references_sent"], **figures})
        progress.update(1)
    if renderers is not None:
        model = renderers.model
        send_every = frames_per_packet(fps, GENERATOR_RATE)
        summary, figures, shown[model] = run(send_every, renderers)
        rows.append({"method": f"callsynth-{model}", "setting": setting_name(GENERATOR_RATE),
                     "packets_per_s": fps / send_every, "kbps": summary["payload_kbps"],
                     "kbps_at_30fps": summary["payload_kbps_at_30fps"],
                     "render_ms": summary["timings_ms"]["render"]["mean"], **figures})
        progress.update(1)
    if strip is not None:
        write_strip(strip, ref, shown, picks)
    for codec in codecs:
        for target in kbps:
            with RunScore(fps) as scorer:
                measured = encode_decode(ref, fps, codec, target,
                                         lambda i, frame: scorer.add(ref[i], frame, ref_lm[i], ref_static[i]))
                rows.append({"method": codec, "setting": f"target {target} kbps", "kbps": measured,
                             **scorer.result()})
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


def clip_names(clips: list) -> dict[str, str]:
    """A name for each clip, its strip's and its rows' in the report: the file's stem, with its folders in
    front where two clips' stems are the same (two folders' clip.mp4: the second's strip was written over
    the first's, and their rows read alike). The same clip twice keeps one name."""
    paths = {str(Path(c)): Path(c) for c in clips}
    depth = {key: 1 for key in paths}
    while True:
        names = {key: "_".join(path.with_suffix("").parts[-depth[key]:]).lstrip("/_") or path.stem
                 for key, path in paths.items()}
        alike = {key for key in paths for other in paths if other != key and names[other] == names[key]
                 and paths[other].resolve() != paths[key].resolve()}
        grown = {key for key in alike if depth[key] < len(paths[key].with_suffix("").parts)}
        if not grown:
            return names
        for key in grown:
            depth[key] += 1


def run_eval(clips: list[Path], out_dir: Path, basis: ExpressionBasis, codecs: list[str],
             kbps: tuple = TOOLS.codec_kbps, max_frames: int | None = None, generator: str | None = None,
             model: str | None = None) -> dict:
    """`generator`: None for warp only, "" for the shipped network of `model` (default: the call's
    default renderer), or a file of it.
    A clip that cannot be read or whose first frame shows no face is skipped with its reason (in the
    report), so that one bad file does not throw away the others' work; none usable is an error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    renderers = None
    if generator is not None:     # loaded (and a bad file refused) once, before any clip
        from receiver.renderer import DEFAULT_MODEL, Renderers

        renderers = Renderers(basis, model or DEFAULT_MODEL, generator or None)
    per_clip = len(CALLSYNTH_RATES) + (renderers is not None) + len(codecs) * len(kbps)
    rows, done, skipped, stopped_at = [], [], [], None
    names = clip_names(clips)
    with tqdm(total=len(clips) * per_clip, desc="eval", unit="run") as progress:
        for at, clip in enumerate(clips):
            progress.set_postfix_str(Path(clip).name)
            try:
                rows += evaluate_clip(Path(clip), basis, codecs, kbps, max_frames, progress, renderers,
                                      strip=out_dir / "strips" / f"{names[str(Path(clip))]}.jpg")
                done.append(str(Path(clip)))     # as its rows name it
            except (MediaError, NoFaceError) as exc:
                skipped.append({"clip": str(clip), "reason": str(exc)})
                progress.write(f"eval: skipping {clip}: {exc}", file=sys.stderr)
                progress.total -= per_clip
                progress.refresh()
            except KeyboardInterrupt:   # Ctrl-C lost every clip done (the validation set: a 15-minute run)
                stopped_at = at
                break
    if stopped_at is not None:
        if rows:
            _write(out_dir, basis, codecs, done, names, skipped, rows, {
                "clips_done": len(done), "clips": len(clips), "not_evaluated": [str(c) for c in clips[stopped_at:]]})
            print(f"eval: interrupted after {len(done)} of {len(clips)} clips; the report of those is in "
                  f"{out_dir / 'report.md'}", file=sys.stderr)
        else:
            print(f"eval: interrupted before the first clip was done; no report written{_earlier(out_dir)}",
                  file=sys.stderr)
        raise KeyboardInterrupt
    if not rows:
        raise ValueError("no clip could be evaluated: " + "; ".join(s["reason"] for s in skipped)
                         + f"; no report written{_earlier(out_dir)}")
    return _write(out_dir, basis, codecs, done, names, skipped, rows)


def _earlier(out_dir: Path) -> str:
    """What a run that wrote no report says of the one in `out_dir`, which it would otherwise pass for."""
    return f" (the report in {out_dir} is an earlier run's)" if (out_dir / "report.json").exists() else ""


def _write(out_dir: Path, basis: ExpressionBasis, codecs: list[str], done: list[str], names: dict,
           skipped: list[dict], rows: list[dict], interrupted: dict | None = None) -> dict:
    """The report of the clips done (all, or those before a Ctrl-C: `interrupted` says how far it got),
    written as report.json, report.md and its plot."""
    report = {"basis": basis.name, "codecs": {c: CODECS[c].label for c in codecs},
              "clips": done, "names": {c: names[c] for c in done}, "skipped": skipped, "summary": summarise(rows),
              "per_clip": rows}
    if interrupted is not None:
        report["interrupted"] = interrupted
    (out_dir / "report.json").write_text(to_json(report))
    write_report(report, out_dir)
    return report
