"""The audio2exp commands: render a talking face from speech, train the model, measure it."""

from __future__ import annotations

from pathlib import Path

from audio2exp.options import A2E_TRAIN, TrainOptions

from .arg_types import display_rate, dropout, existing_folder, positive_int, share, snr_db, weight
from .call_options import CALL
from .json_text import to_json
from .outputs import output_file, output_folder, output_video
from .wire import MAX_REFERENCES

# What audio2exp must reach on speakers it never trained on; `audio2exp-eval` exits 1 when any is missed.
TARGETS = {
    "grid": {"pearson_mean": 0.65, "bilabial_closed_pred": 0.70},   # read sentences (GRID)
    "other": {"pearson_mean": 0.50},                                 # spontaneous speech (interviews)
    "delay_ms": 200.0,                                               # look-ahead + compute
    "compute_ms_per_frame": 3.0,                                     # on a 2-core CPU
}
LABELS = {"pearson_mean": "mouth opening Pearson (mean over clips)",
          "rendered_pearson_mean": "  mouth opening, rendered and read back",
          "bilabial_closed_pred": "lips closed on p/b/m closures (predicted)"}


def cmd_audio2exp(args) -> int:
    from audio2exp.model import load_model

    from .face.basis import load_basis
    from .face.still import still_of
    from .talking_face import check_references, render_talking_face

    if len(args.references) > MAX_REFERENCES:
        raise ValueError(f"--references: {len(args.references)} pictures, at most {MAX_REFERENCES}")
    basis = load_basis(args.basis)
    model = load_model(args.model, basis)
    still = still_of(args.identity)
    references = [still_of(path) for path in args.references]
    check_references(still, references, [str(path) for path in args.references])
    summary = render_talking_face(args.audio, still, basis, model, args.output, fps=args.fps,
                                  progress=not args.quiet, references=references)
    print(to_json(summary))
    return 0


def cmd_audio2exp_train(args) -> int:
    from audio2exp.train import train

    from .face.basis import load_basis

    low, high = args.background_snr
    if low > high:      # was sorted without a word: a typo for another range trained as if meant
        raise ValueError(f"--background-snr: LOW {low:g} dB is above HIGH {high:g} dB")
    options = TrainOptions(epochs=args.epochs, seed=args.seed, max_clips=args.max_clips,
                           phone_weight=args.phone_weight, phone_set=args.phone_set,
                           gap_weight=args.gap_weight, other_speakers_x=args.other_speakers_x,
                           background_share=args.background_share,
                           background_snr_db=(low, high), dropout=args.dropout,
                           conv_dropout=args.conv_dropout, weight_decay=args.weight_decay)
    path = train(load_basis(args.basis), args.out, options)
    print(f"model: {path}")
    return 0


def cmd_audio2exp_eval(args) -> int:
    from audio2exp.evaluate import evaluate
    from audio2exp.model import load_model

    from .face.basis import load_basis
    from .machine import cpu_description
    from .split import audio_validation_files, data_root
    from .talking_face import add_rendered

    basis = load_basis(args.basis)
    model = load_model(args.model, basis)
    if args.clips:
        clips = [Path(c) for c in args.clips]
    else:
        held = audio_validation_files()
        clips = [data_root() / f for f in held["grid"] + held["other"]]
    for clip in clips:
        if not clip.exists():
            raise FileNotFoundError(f"{clip}: no such clip")
    gaps: dict = {}
    report = evaluate(model, basis, clips, args.align_dir, gaps=gaps)
    if args.rendered:
        add_rendered(report, basis, model, args.rendered)     # what the evaluator measures, beside
    print(f"{'clip':<28} {'frames':>6} {'pearson':>8} {'bilabial closed':>16}"
          + (f" {'rendered pearson':>17}" if args.rendered else ""))
    for r in report["per_clip"]:
        closed = (f"{r['bilabial_closed_pred']:.0%} of {r['bilabial_frames']}"
                  if "bilabial_frames" in r else "–")
        print(f"{Path(r['clip']).name:<28} {r['frames']:>6} {r['pearson']:>8.3f} {closed:>16}"
              + (f" {r.get('rendered_pearson', float('nan')):>17.3f}" if args.rendered else ""))
    for n in report["not_measured"]:          # given, not measured: a miss, not a pass on fewer clips
        print(f"{Path(n['clip']).name:<28} not measured: {n['why']}")
    missed = [f"{Path(n['clip']).name}: not measured ({n['why']})" for n in report["not_measured"]]
    delay = report["summary"]["delay"]
    labels = {"grid": "GRID speakers (aligned words)", "other": "interview speakers (spontaneous speech)",
              "all": "all clips (no target of its own)"}

    def check(label: str, value: float, target: float, fmt: str, at_most: bool = False) -> str:
        ok = value <= target if at_most else value >= target
        if not ok:
            missed.append(f"{label} {fmt.format(value)} (target {'<=' if at_most else '>='} {target:g})")
        return f"(target {'<=' if at_most else '>='} {target:g}: {'pass' if ok else 'FAIL'})"

    for name in ("grid", "other", "all"):
        s = report["summary"].get(name)
        if s is None:
            continue
        print(f"\n{labels[name]}: {s['clips']} clips")
        targets = TARGETS.get(name, {})
        rows = [("pearson_mean", s["pearson_mean"], "{:.3f}")]
        if "rendered_pearson_mean" in s:
            rows.append(("rendered_pearson_mean", s["rendered_pearson_mean"], "{:.3f}"))
        if s["bilabial_frames"]:
            rows.append(("bilabial_closed_pred", s["bilabial_closed_pred"], "{:.1%}"))
        for key, value, fmt in rows:
            target = targets.get(key.replace("rendered_", ""))
            verdict = (check(f"{labels[name]}: {LABELS[key].strip()}", value, target, fmt)
                       if target is not None else "")
            print(f"  {LABELS[key]:<44} {fmt.format(value):>8}  {verdict}")
        if s["bilabial_frames"]:
            print(f"  {'  the same on the real video landmarks':<44} {s['bilabial_closed_true']:>8.1%}  "
                  f"({s['bilabial_frames']} frames)")
    print(f"\naudio-to-code delay: {delay['delay_ms']:.1f} ms = {delay['lookahead_ms']} ms look-ahead + "
          f"{delay['compute_ms_per_frame']} ms compute "
          f"{check('audio-to-code delay, ms', delay['delay_ms'], TARGETS['delay_ms'], '{:.1f}', True)}")
    compute = check('compute per frame, ms', delay['compute_ms_per_frame'], TARGETS['compute_ms_per_frame'],
                    '{:.2f}', True)
    print(f"compute per frame: {delay['compute_ms_per_frame']} ms (median of {delay['runs']} streams, "
          f"{delay['compute_ms_range'][0]}-{delay['compute_ms_range'][1]}) {compute}"
          f" on {cpu_description()}")
    report["missed"] = missed
    report["cpu"] = cpu_description()
    if args.plot:
        from .speech_plot import plot_mouth_curves, speech_curves

        print(f"figure: {plot_mouth_curves(speech_curves(gaps), args.plot, 'lip gap: tracked video and audio2exp')}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(to_json(report))
        print(f"report: {args.out}")
    if missed:
        print("\nmissed " + ("a target" if len(missed) == 1 else f"{len(missed)} targets") + ":\n  "
              + "\n  ".join(missed))
        return 1
    print("\nevery target met")
    return 0


def add_audio_commands(sub) -> None:
    p = sub.add_parser("audio2exp", help="render a talking face from a still and speech",
                       description="Drive the still's mouth from the speech in --audio (blinks and a small "
                                   "head sway added) and write a video with that sound. Silence, music and "
                                   "noise leave the mouth at rest; the summary's voice_share and speech_share "
                                   "say how much of the sound was loud, and how much of that sounded like "
                                   "speech.")
    p.add_argument("--audio", required=True, type=Path, help="speech: any audio or video file with sound")
    p.add_argument("--identity", required=True, type=Path,
                   help="the still: an image or a video's first frame with a face")
    p.add_argument("--references", nargs="+", type=Path, default=[], metavar="IMAGE",
                   help=f"more pictures of the same person, at most {MAX_REFERENCES}: one with the mouth open "
                        "and teeth showing, one with the eyes closed; open mouths and blinks are drawn from "
                        "them (without, an open mouth is the still's lips stretched, dark and toothless)")
    p.add_argument("--output", required=True, type=output_video, help="video to write (.mp4/.mov/.mkv)")
    p.add_argument("--fps", type=display_rate, default=CALL.display_fps,
                   help="frame rate, a receiver's display rate unless told (default %(default)s)")
    p.add_argument("--model", type=Path, help="audio2exp checkpoint (default: the shipped one)")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_audio2exp)

    p = sub.add_parser("audio2exp-train", help="train the speech → mouth-code model",
                       description="Train on the clips with clean audio of people outside both validation "
                                   "sets (landmarks are tracked once and cached in ~/.cache/callsynth). "
                                   "Ctrl-C keeps the run in --out; the same command goes on from there.")
    p.add_argument("--out", type=output_folder, default=Path(__file__).resolve().parents[1] / "audio2exp" / "assets",
                   help="folder for the checkpoint (default audio2exp/assets)")
    p.add_argument("--epochs", type=positive_int, default=A2E_TRAIN.epochs,
                   help=f"passes over the data (default {A2E_TRAIN.epochs})")
    p.add_argument("--max-clips", type=positive_int, help="use at most this many clips (quick runs)")
    p.add_argument("--seed", type=int, default=A2E_TRAIN.seed, help=f"random seed (default {A2E_TRAIN.seed})")
    p.add_argument("--phone-weight", type=weight, default=A2E_TRAIN.phone_weight,
                   help="weight of the second task, naming the phone under each frame as pocketsphinx's "
                        "phone decoder hears it (decoded once, cached in ~/.cache/callsynth/phones; "
                        f"default {A2E_TRAIN.phone_weight}; 0 trains on mouth codes alone)")
    p.add_argument("--phone-set", choices=("phones", "visemes"), default=A2E_TRAIN.phone_set,
                   help="what the second task names: pocketsphinx's 40 phones, or 12 mouth shapes that group "
                        f"the phones the lips make alike (default {A2E_TRAIN.phone_set})")
    p.add_argument("--other-speakers-x", type=positive_int, default=A2E_TRAIN.other_speakers_x,
                   help="how many times as often the clips of speakers other than GRID s1 are drawn "
                        f"(default {A2E_TRAIN.other_speakers_x}; 1: as often as their share of the frames)")
    p.add_argument("--gap-weight", type=weight, default=A2E_TRAIN.gap_weight,
                   help="how many times the lip gap's squared error counts beside the 55 mouth points' "
                        f"(default {A2E_TRAIN.gap_weight:g}; 0: the mouth points alone)")
    p.add_argument("--background-share", type=share, default=A2E_TRAIN.background_share,
                   help="share of the training windows drawn with music, noise or another person's voice "
                        "mixed under the speech (audio2exp/backgrounds.py; "
                        f"default {A2E_TRAIN.background_share:g}; 0: clean speech only)")
    p.add_argument("--background-snr", type=snr_db, nargs=2, metavar=("LOW", "HIGH"),
                   default=A2E_TRAIN.background_snr_db,
                   help="dB under the voice those backgrounds are mixed at, drawn between LOW and HIGH "
                        f"(default {A2E_TRAIN.background_snr_db[0]:g} {A2E_TRAIN.background_snr_db[1]:g})")
    p.add_argument("--dropout", type=dropout, default=A2E_TRAIN.dropout,
                   help=f"dropout before the head's first layer (default {A2E_TRAIN.dropout:g})")
    p.add_argument("--conv-dropout", type=dropout, default=A2E_TRAIN.conv_dropout,
                   help=f"dropout after each convolution (default {A2E_TRAIN.conv_dropout:g})")
    p.add_argument("--weight-decay", type=weight, default=A2E_TRAIN.weight_decay,
                   help=f"AdamW's weight decay (default {A2E_TRAIN.weight_decay:g})")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_audio2exp_train)

    p = sub.add_parser("audio2exp-eval", help="measure audio2exp on speakers it never trained on",
                       description="Mouth-opening correlation, lips closed on p/b/m, and the audio-to-code "
                                   "delay. Phone times come from pocketsphinx aligning each clip's words "
                                   "(GRID .align files in --align-dir, or the sentence a GRID file name spells). "
                                   "Exits 1, naming each, when a target is missed: GRID Pearson >= 0.65 and "
                                   ">= 70 % of p/b/m closures closed, interview (spontaneous speech) Pearson "
                                   ">= 0.5, delay <= 200 ms, compute <= 3 ms a frame.")
    p.add_argument("--clips", nargs="+", help="clips with audio (default: the audio validation set)")
    p.add_argument("--align-dir", type=existing_folder, help="folder of GRID .align files named like the clips")
    p.add_argument("--model", type=Path, help="audio2exp checkpoint (default: the shipped one)")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.add_argument("--out", type=output_file, help="also write the report here (JSON)")
    p.add_argument("--plot", type=output_file, metavar="PNG",
                   help="also draw each clip's lip gap over time, tracked and predicted, with its r")
    p.add_argument("--rendered", type=output_folder, metavar="DIR",
                   help="also render each clip's talking face (as `callsynth audio2exp` does, from the clip's "
                        "first frame and its own sound) into DIR and measure its mouth opening as the "
                        "evaluator's face_metrics.py `mouth` does (MediaPipe on both videos, matched by frame "
                        "time); the same targets apply to it (about 10 s a clip)")
    p.set_defaults(func=cmd_audio2exp_eval)
