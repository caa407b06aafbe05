"""The `callsynth` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

from .arg_types import kbps_list, positive_int
from .call_options import CALL
from .json_text import to_json
from .outputs import clash, output_file, output_folder, output_picture_or_video, output_video
from .tool_options import TOOLS

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging
warnings.filterwarnings("ignore", module="google.protobuf")

EPILOG = "Run `callsynth COMMAND --help` for the options of each command."


def cmd_fit_basis(args) -> int:
    from .face.fit_basis import fit_basis

    basis = fit_basis(args.out, code_bits=args.code_bits, max_components=args.max_components,
                      max_grid_s1=args.max_grid_s1, workers=args.workers)
    if args.set_default:
        (Path(args.out) / "default_basis.json").write_text(json.dumps({"basis": basis.name}) + "\n")
        print(f"default basis is now {basis.name}")
    return 0


def cmd_reenact(args) -> int:
    from tqdm import tqdm

    from receiver.renderer import Renderers

    from .face.basis import load_basis
    from .face.still import STILL_SEARCH_S, NoFaceError, still_of
    from .media import VideoWriter, iter_frames, moving_video_info, written_whole
    from .reenact import ReenactStats, packet_every, reenact

    basis = load_basis(args.basis)
    info = moving_video_info(args.driving, ": the driving video must move: give a video of a face to drive the still")
    still = still_of(args.identity)
    relative = args.relative if args.relative is not None else (
        args.identity.resolve() != args.driving.resolve())
    try:
        sender_still = still_of(args.driving) if relative else None       # its first face
    except NoFaceError as exc:    # its advice is for a still; a driving video needs a face of its own
        raise NoFaceError(f"{args.driving}: the driving video shows no face: give a video of a face to drive "
                          f"the still (its first {STILL_SEARCH_S:g} s are searched)") from exc
    send_every = packet_every(info.fps, args.send_every)
    stats = ReenactStats(info.fps, send_every)
    total = min(info.frames or 0, args.max_frames or 10 ** 9) or None
    started = time.perf_counter()
    with ExitStack() as whole:
        # each written beside its name and moved there when complete (media.written_whole)
        out = whole.enter_context(VideoWriter(whole.enter_context(written_whole(args.output)), info.fps))
        ref = whole.enter_context(VideoWriter(whole.enter_context(written_whole(args.reference_out)), info.fps)) \
            if args.reference_out else None
        pairs = reenact(still, iter_frames(args.driving, args.max_frames), info.fps, basis,
                        send_every=send_every, smoothing=not args.no_smoothing, stats=stats,
                        sender_still=sender_still, renderers=Renderers(basis, args.model, args.generator,
                                                                     repair_every=args.repair_every))
        for crop, frame in tqdm(pairs, total=total, desc="reenact", unit="frame", disable=args.quiet):
            out.write(frame)
            if ref:
                ref.write(crop)
    summary = stats.summary()
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    summary["basis"] = basis.name
    summary["codes_relative_to"] = "driving first face" if relative else "identity still"
    summary["identity"], summary["driving"] = str(args.identity), str(args.driving)
    if args.stats:
        Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats).write_text(to_json(summary) + "\n")
    print(f"{summary['frames']} frames, {summary['packets']} packets of {summary['bytes_per_packet']['mean']:.1f}"
          f" B: payload {summary['payload_kbps']:.2f} kbps ({summary['payload_kbps_at_30fps']:.2f} kbps at "
          f"30 fps), {summary['frames_no_face']} frames without a face -> {args.output}")
    return 0


def cmd_eval(args) -> int:
    from .eval.codecs import parse_codecs
    from .eval.report import floors
    from .eval.run import run_eval
    from .face.basis import load_basis
    from .split import eval_clips, selection_files

    codecs = parse_codecs(args.codecs) if args.codecs else []
    if args.clips:
        clips = [Path(c) for c in args.clips]
    else:
        clips = selection_files() if args.people == "selection" else eval_clips()
    for clip in clips:
        if not clip.exists():
            raise FileNotFoundError(f"{clip}: no such clip")
    generator = None if args.warp_only else str(args.generator or "")
    report = run_eval(clips, Path(args.out), load_basis(args.basis), codecs, args.kbps, args.max_frames,
                      generator, args.model)
    print(f"{'method':<16} {'setting':<20} {'kbps':>8} {'NME %':>7} {'SSIM':>6} {'PSNR':>6}")
    for r in floors(report["summary"]):
        nme = r.get("nme")      # none where MediaPipe found no face in the rebuilt frames (report.md: face lost)
        nme = f"{nme:>7.2f}" if nme is not None and math.isfinite(nme) else f"{'–':>7}"
        print(f"{r['method']:<16} {r['setting']:<20} {r['kbps']:>8.2f} {nme} {r['ssim']:>6.3f} {r['psnr']:>6.2f}")
    print(f"report: {Path(args.out) / 'report.md'}, {Path(args.out) / 'rate_distortion.png'}")
    return 0


def cmd_train_mouth(args) -> int:
    import shutil
    from dataclasses import replace

    from .face.basis import load_basis
    from .model.runtime import default_mouth_path
    from .split import eval_clips, selection_files
    from .train.mouth_pairs import build_mouth_pairs, choose_clips, held_out
    from .train.mouth_train import MouthTrainOptions, train_mouth

    options = replace(MouthTrainOptions(), steps=args.steps, seed=args.seed)
    basis = load_basis(args.basis)
    val = build_mouth_pairs(eval_clips(), basis, options.max_frames, 1, args.workers)
    data = build_mouth_pairs(choose_clips(options.grid_s1_clips, options.seed), basis, options.max_frames,
                             options.every, args.workers)
    data, selection = held_out(data, selection_files())
    print(f"mouth samples: {len(data['truth'])} to train on, {len(selection['truth'])} of "
          f"{len(selection['names'])} selection clips to choose the kept step")
    try:
        path = train_mouth(data, selection, basis, options, args.out, validation=val)
    except RuntimeError as exc:
        print(f"train-mouth: {exc} (train longer: --steps)", file=sys.stderr)
        return 1
    print(f"mouth generator: {path} (validation figures in {path.with_suffix('.json')})")
    if args.install:
        shutil.copyfile(path, default_mouth_path())
        print(f"installed as {default_mouth_path()}")
    return 0


def cmd_fit_interior(args) -> int:
    from .face.basis import load_basis
    from .face.interior_code import default_codebook_path
    from .split import eval_clips, selection_files
    from .train.interior_fit import fit_codebook, measure
    from .train.mouth_options import MouthTrainOptions
    from .train.mouth_pairs import build_mouth_pairs, choose_clips, held_out

    options, basis = MouthTrainOptions(), load_basis(args.basis)
    data = build_mouth_pairs(choose_clips(options.grid_s1_clips, options.seed), basis, options.max_frames,
                             options.every, args.workers)
    # train-mouth's training part: the selection people stay unseen by the codebook too, so that the
    # mouth generator's kept step is chosen on people neither has seen
    data, selection = held_out(data, selection_files())
    codebook = fit_codebook(data, seed=args.seed)
    for name, arrays in (("training", data), ("selection", selection),
                         ("validation", build_mouth_pairs(eval_clips(), basis, options.max_frames, 1, args.workers))):
        m = measure(codebook, arrays)
        print(f"{name} people, {m['samples']} open-mouth samples: interior error {m['interior_before']:.1f} "
              f"drawn -> {m['interior_after']:.1f} with the code ({100 * m['coded_share']:.0f} % coded)")
    path = codebook.save(args.out)
    print(f"interior codebook: {path}")
    if args.install:
        codebook.save(default_codebook_path())
        print(f"installed as {default_codebook_path()}")
    return 0


def cmd_train(args) -> int:
    from .face.basis import load_basis
    from .train.config import TrainConfig
    from .train.loop import Trainer

    config = TrainConfig.load(args.config)
    if args.export:
        from .model.runtime import export_generator

        source = Path(args.out or config.out) / ("best.pt" if args.best else "checkpoint.pt")
        if not source.exists() and args.best:
            raise FileNotFoundError(f"{source}: no validated step has beaten the warp on SSIM with NME no "
                                    f"worse yet; every validated step is in {source.parent}/generator_*.pt")
        if not source.exists():
            raise FileNotFoundError(f"{source}: no checkpoint to export; train first")
        print(f"generator: {export_generator(source, args.export)}")
        return 0
    if args.steps:
        config.steps = args.steps
    if args.out:
        config.out = str(args.out)
    path = Trainer(config, load_basis(args.basis)).run(resume=not args.restart)
    print(f"checkpoint: {path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import ROUNDS, bench
    from .face.basis import load_basis
    from .face.still import still_of
    from .split import data_root

    identity = args.identity or data_root() / TOOLS.bench_identity
    still = still_of(identity)
    generator = None if args.warp_only else str(args.generator or "")
    rows = bench(still, load_basis(args.basis), generator, args.frames)
    from .machine import cpu_description

    print(f"on {cpu_description()}")
    width = max(len(r["renderer"]) for r in rows)
    print(f"{'renderer':<{width}} {'variant':<40} {'ms/frame':>9} {'fps':>7} {'x warp':>7}")
    for r in rows:
        print(f"{r['renderer']:<{width}} {r['variant']:<40} {r['ms']:>9.2f} {1000 / r['ms']:>7.1f} "
              f"{r['ratio']:>7.2f}")
    for renderer in dict.fromkeys(r["renderer"] for r in rows if r["renderer"] != "warp"):
        best = min((r for r in rows if r["renderer"] == renderer), key=lambda r: r["ratio"])
        print(f"{renderer}: fastest {best['variant']} ({1000 / best['ms']:.1f} fps), "
              f"{best['ratio']:.2f}x the warp alone, in this one run (median of {ROUNDS} rounds)")
    return 0


def cmd_combine(args) -> int:
    from .combine import combine
    from .face.basis import load_basis

    n = combine(args.identity, args.attribute, args.output, load_basis(args.basis), args.model,
                str(args.generator) if args.generator else None, args.expression, args.attribute2)
    print(f"{n} frame(s) -> {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .call_commands import add_model_options

    parser = argparse.ArgumentParser(
        prog="callsynth",
        description="Video calls at a few kbps: the sender streams head pose and an expression code, "
                    "the receiver rebuilds the caller's face from one still picture.",
        epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("reenact", help="animate a still with a driving video, through the wire format",
                       description="Run tracker -> code -> packets -> decode -> landmarks -> warp -> "
                                   "generator repair (--model warp: stop at the warp) frame by frame, "
                                   "exactly as a call would, and write the rebuilt video.")
    p.add_argument("--identity", required=True, type=Path,
                   help="the caller's still: an image, or a video whose first frame with a face is used")
    p.add_argument("--driving", required=True, type=Path, help="video whose pose and expression drive it")
    p.add_argument("--output", required=True, type=output_video, help="rebuilt video (.mp4/.mov/.mkv, 256x256)")
    p.add_argument("--reference-out", type=output_video,
                   help="also write the driving frames cropped exactly like OUTPUT, frame for frame")
    p.add_argument("--stats", type=output_file, help="write bytes per packet, kbps, faceless frames, timings (JSON)")
    p.add_argument("--send-every", type=positive_int,
                   help=f"send packets as often as every Nth frame of a 30 fps camera does (30/N a second, at "
                        f"most one a frame), interpolate between (default: {CALL.reenact_send_every}, 15 packets/s: "
                        f"3 frames of every 5 at 25 fps, every 4th at 60)")
    p.add_argument("--basis", type=Path, help="basis file (default: the one shipped in callsynth/assets)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many driving frames")
    p.add_argument("--relative", action=argparse.BooleanOptionalAction, default=None,
                   help="measure codes from the driving video's first face instead of the still "
                        "(default: on when IDENTITY and DRIVING are different files)")
    p.add_argument("--no-smoothing", action="store_true", help="turn off the tracker's landmark smoothing")
    add_model_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reenact)

    p = sub.add_parser("eval", help="fidelity and bitrate of callsynth beside video codecs",
                       description="Self-reenactment of each clip (still = first frame), by callsynth at 30, "
                                   "15 and 10 packets a second at most (1, 2 and 3 frames a packet at 30 fps, "
                                   "2, 4 and 6 at 60), and each codec at "
                                   "its lowest reachable bitrate and a few higher ones. Writes report.json, "
                                   "report.md and rate_distortion.png to --out.")
    clips = p.add_mutually_exclusive_group()
    clips.add_argument("--clips", nargs="+", help="video clips (default: the clips of --people)")
    clips.add_argument("--people", choices=("validation", "selection"), default=TOOLS.people,
                       help="without --clips, the identity split's clips of: the validation people, "
                            "whom no training or choice has seen, or the selection people, "
                            "training identities held out of the mouth generator's training "
                            "(callsynth/assets/identity_split.json; default %(default)s)")
    p.add_argument("--codecs", default=",".join(TOOLS.codecs),
                   help=f"comma-separated subset of {','.join(TOOLS.codecs)}; empty for none (default: all)")
    p.add_argument("--kbps", type=kbps_list, default=TOOLS.codec_kbps,
                   help=f"codec target bitrates, comma-separated (default {','.join(map(str, TOOLS.codec_kbps))})")
    p.add_argument("--out", required=True, type=output_folder, help="folder for the report")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.add_argument("--max-frames", type=positive_int, help="use at most this many frames of each clip")
    p.add_argument("--generator", nargs="?", const="", default="", metavar="CHECKPOINT",
                   help="the generator measured beside the warp: the shipped one, the call's default "
                        "renderer (the default; a bare --generator says the same), or CHECKPOINT")
    from .call_options import MODELS

    p.add_argument("--model", choices=[m for m in MODELS if m != "warp"],
                   help="the neural renderer measured beside the warp (default: the call's default, "
                        f"{CALL.model})")
    p.add_argument("--warp-only", action="store_true", help="do not measure the generator")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("fit-basis", help="fit the mean face, rigid points and PCA expression basis",
                       description="Fit the expression basis on the training identities of ../shared/data "
                                   "and write basis-<hash>.npz (landmarks are cached in ~/.cache/callsynth).")
    p.add_argument("--out", type=output_folder, default=Path(__file__).parent / "assets", help="output folder")
    p.add_argument("--code-bits", type=positive_int, default=TOOLS.code_bits,
                   help="wire bits for the code (default %(default)s)")
    p.add_argument("--max-components", type=positive_int, default=TOOLS.max_components,
                   help="PCA components considered (default %(default)s)")
    p.add_argument("--max-grid-s1", type=positive_int, default=TOOLS.max_grid_s1,
                   help="GRID s1 clips used, of 1000 (default %(default)s)")
    p.add_argument("--workers", type=positive_int, default=TOOLS.workers,
                   help="tracking processes (default %(default)s)")
    p.add_argument("--set-default", action="store_true", help="make the new basis the shipped default")
    p.set_defaults(func=cmd_fit_basis)

    p = sub.add_parser("train", help="train the MC-AAD generator (CPU or CUDA)",
                       description="Fit the expression CNN, then train the call generator on pairs made by "
                                   "the call's own path from the training identities of ../shared/data, with "
                                   "the patent's losses. Writes checkpoint.pt, log.csv and sample grids to the "
                                   "config's out folder; resumes from its checkpoint unless --restart.")
    p.add_argument("--config", required=True, type=Path, help="JSON config (see configs/)")
    p.add_argument("--steps", type=positive_int, help="override the config's number of steps")
    p.add_argument("--out", type=output_folder, help="override the config's output folder")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--export", type=output_file, metavar="PATH",
                   help="do not train: write the generator of the config's checkpoint to PATH "
                        "(callsynth/assets/generator.pt is what receivers load by default)")
    p.add_argument("--best", action="store_true",
                   help="with --export: take best.pt, the step whose validation SSIM gain over the warp "
                        "was highest among those whose landmark NME was no worse (the config's "
                        "val_every), instead of the last checkpoint; either way the file carries the "
                        "repair gain its validation chose")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_train)

    from .train.mouth_options import MouthTrainOptions

    mouth = MouthTrainOptions()
    p = sub.add_parser("train-mouth", help="train the mouth generator (multi-attribute MC-AAD, CPU)",
                       description="Make mouth samples by the call's own path (sender, references as they "
                                   "happen, the receiver's warp and blend) from the training identities of "
                                   "../shared/data, then train the mouth generator on them with the patent's "
                                   "reconstruction and attribute losses and a teeth-share term, keeping "
                                   "the step that beats the composed mouth most on training people held "
                                   "out of training (the validation people are only logged). Samples are "
                                   "cached outside the repository.")
    p.add_argument("--steps", type=positive_int, default=mouth.steps, help=f"training steps (default {mouth.steps})")
    p.add_argument("--seed", type=int, default=mouth.seed, help=f"random seed (default {mouth.seed})")
    p.add_argument("--out", type=output_folder, default=Path(TOOLS.mouth_out),
                   help=f"output folder (default {TOOLS.mouth_out})")
    p.add_argument("--install", action="store_true",
                   help="copy the result to callsynth/assets/mouth_generator.pt, what receivers load")
    p.add_argument("--workers", type=positive_int, default=TOOLS.workers,
                   help="processes making samples (default %(default)s)")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_train_mouth)

    p = sub.add_parser("fit-interior", help="fit the interior codebook: the byte a packet says of the mouth",
                       description="Fit the codebook of mouth-interior residuals a sender names in each packet "
                                   "(callsynth/face/interior_code.py): k-means of real-minus-drawn mouth "
                                   "patches on the training people's samples, made by the call's own path "
                                   "as train-mouth makes them (and cached with them), less the selection "
                                   "people train-mouth chooses its kept step on. Prints the interior error "
                                   "with and without the code on the training, selection and validation "
                                   "people. Samples made after --install draw with the new codebook: run "
                                   "train-mouth again after it.")
    p.add_argument("--out", type=output_file, default=Path(TOOLS.interior_out),
                   help="codebook file to write (default %(default)s)")
    p.add_argument("--install", action="store_true",
                   help="also write callsynth/assets/interior_codebook.npz, what senders and receivers load")
    p.add_argument("--seed", type=int, default=MouthTrainOptions().seed, help="k-means seed (default %(default)s)")
    p.add_argument("--workers", type=positive_int, default=TOOLS.workers,
                   help="processes making samples (default %(default)s)")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_fit_interior)

    p = sub.add_parser("combine", help="identity of A with the attributes of B (patent FIG. 7-9)",
                       description="Generate the identity of --identity with the attributes (background, "
                                   "lighting, hair) of --attribute, the expression of --expression and the "
                                   "head pose of --attribute2 (both default to --attribute). Images, or "
                                   "videos frame by frame. A's face is drawn with A's own shape at that pose "
                                   "and expression, colour matched to B and Poisson blended into B; "
                                   "--model generator (the default) then repairs it with A's identity "
                                   "vector, --model warp stops at the blend.")
    p.add_argument("--identity", required=True, type=Path,
                   help="A: whose face (image, or a video's first frame with a face)")
    p.add_argument("--attribute", required=True, type=Path, help="B: the picture to keep (image or video)")
    p.add_argument("--expression", type=Path,
                   help="C: whose expression (default B): C's change from its own first frame, so a "
                        "video's; a still image gives none. A video shorter than B holds its last "
                        "expression to the end")
    p.add_argument("--attribute2", type=Path, help="D: whose head pose (default B; an image's holds "
                                                   "throughout, a shorter video's last holds to the end)")
    p.add_argument("--output", required=True, type=output_picture_or_video,
                   help="image (.png/.jpg/...) or video (.mp4/.mov/.mkv)")
    add_model_options(p, repair_every=False)
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("bench", help="ms per frame of the warp and the generator at 256² on this CPU",
                       description="Time the receiver's renderers on a still: the warp alone, the warp with "
                                   "the mouth generator as a call runs it, the default renderer, and the "
                                   "full-frame generator on every frame with 1 or 2 threads, channels-last "
                                   "memory, TorchScript and ONNX Runtime. Each row is timed in short rounds "
                                   "between timings of the warp, and its cost over the warp's is the median "
                                   "over rounds, so a machine whose speed drifts still gives one ratio.")
    p.add_argument("--identity", type=Path,
                   help=f"still to render (default: a validation clip's first frame, {TOOLS.bench_identity} "
                        "under $CALLSYNTH_DATA or ../shared/data)")
    p.add_argument("--generator", type=Path, help="generator checkpoint (default: the shipped one)")
    p.add_argument("--warp-only", action="store_true", help="time only the warp")
    p.add_argument("--frames", type=positive_int, default=TOOLS.bench_frames,
                   help="frames timed per row, over all its rounds (default %(default)s)")
    p.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    p.set_defaults(func=cmd_bench)

    from .call_commands import add_call_commands

    add_call_commands(sub)

    from .audio_commands import add_audio_commands

    add_audio_commands(sub)
    for command in sub.choices.values():     # what main() checks the outputs against, and says a clash by
        command.set_defaults(command_parser=command)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .call_commands import fix_ice_hosts
    from .demo import DemoError
    from .errors import said
    from .face.basis import BasisError
    from .face.still import NoFaceError
    from .media import MediaError
    from .signalling import SignallingError

    fix_ice_hosts(args)
    command = args.command_parser
    problem = clash(command, args)
    if problem:
        command.error(problem)
    try:
        return args.func(args)
    except (MediaError, NoFaceError, BasisError, FileNotFoundError, ValueError, SignallingError,
            DemoError, TimeoutError) as exc:  # audio2exp's ModelError is a ValueError
        print(f"callsynth {args.command}: error: {said(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:    # a disk that fills or a folder that goes read-only mid-run: said, not a traceback
        print(f"callsynth {args.command}: error: {said(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
