"""The call's commands: `signal`, `send`, `receive` and `demo` (all three on loopback at once)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from pathlib import Path

from .arg_types import (camera_index, display_rate, per_second, playout_delay_ms, port, positive_int, room_name,
                        seconds, wait_s)
from .call_key import ENV_VAR
from .call_options import CALL
from .json_text import to_json
from .outputs import output_file, output_folder, output_video


def _setup_logging(verbose: bool) -> None:
    from .machine import share_cores

    share_cores()      # every call command starts here
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _url(args) -> str:
    return args.signal or f"ws://{CALL.host}:{CALL.signalling_port}"


def _rtc_argument(parser: str):
    """callsynth.rtc's `parser` as an argparse type: its ValueError's own words are the usage error (argparse
    would say only "invalid value"). rtc, with aiortc, is imported when such an option is given, not for
    every command line."""
    def parse(text: str):
        from . import rtc

        try:
            return getattr(rtc, parser)(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


_ice_server = _rtc_argument("parse_ice_server")
_ice_host = _rtc_argument("parse_ice_host")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError("loss is a percentage in [0, 100)")
    return value / 100


def cmd_signal(args) -> int:
    from .errors import said
    from .signalling import ServerLimits, run_server, server_tls

    _setup_logging(args.verbose)
    limits = ServerLimits(connections_per_address=args.max_per_address, messages_per_s=args.max_rate,
                          idle_timeout_s=args.idle_timeout)
    tls = server_tls(args.tls_cert, args.tls_key)
    try:
        asyncio.run(run_server(args.host, args.port, args.token, limits=limits, tls=tls))
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {said(exc)}") from exc
    return 0


def cmd_key(args) -> int:
    from .call_key import CallKey

    key = CallKey.new().text
    print(key)
    print(f"give it to the other party out of band; both run with --key {key} (or {ENV_VAR}={key})",
          file=sys.stderr)
    return 0


def _source_and_voice(args):
    """The camera, video file or nothing (--camera-off), the voice to send with it, and whether that voice
    is a microphone's."""
    from sender.capture import CameraSource, FileAudioTrack, VideoFileSource, microphone_track

    from .media import MediaError

    if args.camera_off:
        if args.camera is not None:
            raise ValueError("--camera-off and --camera N contradict each other")
        source = None
    elif (args.camera is None) == (args.video is None):
        raise ValueError("give exactly one of --camera N or --video FILE (or --camera-off)")
    else:
        source = VideoFileSource(args.video, args.max_frames) if args.video else CameraSource(args.camera)
    audio = args.audio or "auto"
    track = None
    microphone = audio == "mic" or (audio == "auto" and not args.video)
    if audio == "mic":
        track = microphone_track()          # asked for by name: one that is not there is an error
    elif audio == "auto" and args.video:
        try:
            track = FileAudioTrack(args.video)
        except ValueError:
            logging.getLogger("callsynth.send").info("%s has no audio: sending none", args.video)
    elif audio == "auto":
        # a camera, or none: the caller's own voice, as any call takes it (it used to send none unless
        # told --audio mic, and a camera-off call then had nothing to drive the face)
        try:
            track = microphone_track()
        except MediaError as exc:
            logging.getLogger("callsynth.send").warning("%s: sending no voice", exc)
    elif audio != "none":
        track = FileAudioTrack(audio)
    return source, track, microphone and track is not None


def _sender_options(args, stats: Path | None):
    from sender.call import SenderOptions

    return SenderOptions(url=_url(args), room=args.room, key=args.key, tls_ca=args.tls_ca, token=args.token,
                         identity=str(args.identity) if args.identity else None,
                         send_every=args.send_every, budget_kbps=args.budget, loss=args.loss,
                         hosts=tuple(args.ice_host),
                         ice_servers=tuple(args.ice_server), stats_path=str(stats) if stats else None,
                         camera_off=args.camera_off,
                         speech_after_no_face_s=None if args.no_speech_fallback else args.speech_after,
                         audio_model=str(args.audio_model) if args.audio_model else None)


def _receiver_options(args, stats: Path | None):
    from receiver.call import ReceiverOptions

    return ReceiverOptions(url=_url(args), room=args.room, key=args.key, tls_ca=args.tls_ca, token=args.token,
                           output=str(args.output) if args.output else None, window=args.window,
                           play_voice=args.play_voice,
                           stats_path=str(stats) if stats else None, fps=args.fps,
                           delay_ms=args.playout_delay, duration=args.duration,
                           rejoin_wait=args.rejoin_wait, hosts=tuple(args.ice_host),
                           ice_servers=tuple(args.ice_server), audio_fallback=args.audio_fallback,
                           audio_model=str(args.audio_model) if args.audio_model else None,
                           model=args.model, generator=str(args.generator) if args.generator else None,
                           threads=args.threads, repair_every=args.repair_every)


def cmd_send(args) -> int:
    from sender.call import run_sender

    from .face.basis import load_basis

    _setup_logging(args.verbose)
    source, track, _ = _source_and_voice(args)
    summary = asyncio.run(run_sender(source, load_basis(args.basis), _sender_options(args, args.stats), track))
    print(to_json(summary))
    return 0


def cmd_receive(args) -> int:
    from receiver.call import run_receiver

    from .face.basis import load_basis

    _setup_logging(args.verbose)
    summary = asyncio.run(run_receiver(load_basis(args.basis), _receiver_options(args, args.stats)))
    print(to_json({k: v for k, v in summary.items() if k != "events"}))
    if summary.get("failure"):
        print(f"error: the call failed: {summary['failure']}", file=sys.stderr)
        return 1
    return 0


def cmd_call(args) -> int:
    from twoway.call import TwoWayOptions, run_two_way

    from .face.basis import load_basis

    _setup_logging(args.verbose)
    source, track, microphone = _source_and_voice(args)
    options = TwoWayOptions(send=_sender_options(args, None), receive=_receiver_options(args, None),
                            stats_path=str(args.stats) if args.stats else None,
                            echo_cancel=microphone if args.echo_cancel is None else args.echo_cancel)
    summary = asyncio.run(run_two_way(source, load_basis(args.basis), options, track))
    print(to_json({k: v for k, v in summary.items() if k != "received"}
                  | {"received": {k: v for k, v in summary["received"].items() if k != "events"}}))
    if summary.get("failure"):
        print(f"error: the call failed: {summary['failure']}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.two_way:
        return _two_way_demo(args)
    if args.video2:               # a one-way demo would play --video alone and say nothing of it
        raise ValueError("--video2 is side b's clip of a two-way demo: add --two-way, or leave it out")

    report = run_demo(args.video, Path(args.out), identity=args.identity, loss=args.loss,
                      send_every=args.send_every, delay_ms=args.playout_delay, audio=args.audio,
                      max_frames=args.max_frames, camera_off=args.camera_off,
                      audio_fallback=args.audio_fallback, model=args.model, generator=args.generator,
                      budget=args.budget, repair_every=args.repair_every)
    print(to_json(report["headline"]))
    print(f"measured on {report['cpu']}")
    print(f"received video: {report['files']['video']}\nstats: {report['files']['stats']}")
    return _said_if_interrupted(report)


def _said_if_interrupted(report: dict) -> int:
    """The demo's exit status: 130 (and a line) when a Ctrl-C ended the call and what it showed is the call so
    far, 0 when it ran to the clip's end."""
    if report["interrupted"]:
        print("interrupted (Ctrl-C): the call so far, each side hung up", file=sys.stderr)
        return 130
    return 0


def _two_way_demo(args) -> int:
    from .demo import run_two_way_demo
    from .split import eval_clips

    if args.identity or args.audio or args.camera_off:    # each side's still and voice come from its clip
        raise ValueError("--identity, --audio and --camera-off are one side's still and voice; a two-way demo "
                         "takes each side's from its clip (--video, --video2): leave them out")
    other = args.video2
    if other is None:   # another held-out clip than --video
        other = next(c for c in eval_clips() if c.resolve() != Path(args.video).resolve())
    # every other option of the demo, to both sides (they were dropped without a word but these)
    extra = ["--send-every", str(args.send_every), "--repair-every", str(args.repair_every)]
    extra += ["--budget", str(args.budget)] if args.budget else []
    extra += ["--playout-delay", str(args.playout_delay)] if args.playout_delay is not None else []
    extra += ["--max-frames", str(args.max_frames)] if args.max_frames else []
    extra += ["--loss", f"{args.loss * 100:g}"] if args.loss else []
    extra += ["--generator", str(args.generator)] if args.generator else []
    extra += ["--audio-fallback"] if args.audio_fallback else []
    report = run_two_way_demo((Path(args.video), Path(other)), Path(args.out), extra, model=args.model)
    print(to_json(report["headline"]))
    print(f"measured on {report['cpu']}")
    print(f"received videos and stats in {args.out}")
    return _said_if_interrupted(report)


def add_model_options(p: argparse.ArgumentParser, repair_every: bool = True) -> None:
    """--model and --generator, shared by every command that rebuilds frames; --repair-every where frames
    follow one another (not `combine`'s single transfer)."""
    from .call_options import MODELS

    p.add_argument("--model", choices=MODELS, default=CALL.model,
                   help="rebuild frames by the warp of the still (with its reference stills) alone; 'mouth': "
                        "the warp with its mouth repaired by the trained multi-attribute MC-AAD mouth "
                        "generator; 'generator': the full-frame MC-AAD generator repairs the still, and the "
                        "frames warp the repaired still (in a call it repairs beside the frames and the mouth "
                        f"generator repairs each frame's mouth) (default {CALL.model})")
    p.add_argument("--generator", type=Path, metavar="FILE",
                   help="that model's file (default: the shipped callsynth/assets/mouth_generator.pt or "
                        "generator.pt)")
    if repair_every:
        p.add_argument("--repair-every", type=positive_int, default=CALL.repair_still_every, metavar="N",
                       help="with --model generator: repair the still on every Nth frame (a call: at most that "
                            "often, beside the frames); 1 repairs every frame itself, at ~7-10x the warp's cost "
                            "in `callsynth bench` (default %(default)s)")


def add_call_commands(sub) -> None:
    from .signalling import ServerLimits

    limits = ServerLimits()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--signal", metavar="URL",
                        help=f"signalling server, ws:// or wss:// (default ws://{CALL.host}:{CALL.signalling_port})")
    common.add_argument("--room", required=True, type=room_name, help="room name shared by sender and receiver")
    common.add_argument("--key", default=os.environ.get(ENV_VAR),
                        help="the call key, a secret only the call's two parties hold (default: "
                             f"${ENV_VAR}); `send` makes and prints one when none is given, `receive` "
                             "needs it; the server admits only its holders and the peers sign their "
                             "offers with it")
    common.add_argument("--tls-ca", metavar="PEM",
                        help="trust this CA for a wss:// signalling server (e.g. a self-signed one)")
    common.add_argument("--token", help="shared secret, if the server asks for one")
    common.add_argument("--ice-host", action="append", default=None, metavar="ADDR", type=_ice_host,
                        help=f"address to offer ICE candidates on (repeatable; default {CALL.host}; "
                             "give a LAN address to call across machines)")
    common.add_argument("--ice-server", action="append", default=[], metavar="URL", type=_ice_server,
                        help="STUN or TURN server (repeatable): stun:HOST[:PORT] or "
                             "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]; two peers that cannot "
                             "reach each other (NATs, separate networks) meet through a TURN relay")
    common.add_argument("--basis", type=Path, help="basis file (default: the shipped one)")
    common.add_argument("--audio-model", type=Path, help="audio2exp checkpoint (default: the shipped one)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    p = sub.add_parser("signal", help="run the websockets signalling server",
                       description="Rooms of two peers, admitted only with a proof of their call key; "
                                   "relays the peers' signed offer/answer/candidate/bye, answers malformed or "
                                   "oversized messages with an error, caps connections, message rate and idle "
                                   "time, checks --token when set, serves wss:// with --tls-cert/--tls-key.")
    p.add_argument("--host", default=CALL.host, help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=port, default=CALL.signalling_port, help="port (default %(default)s)")
    p.add_argument("--token", help="require this token in every join")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve wss:// (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--max-per-address", type=positive_int, default=limits.connections_per_address,
                   metavar="N", help="connections one address may hold (default %(default)s)")
    p.add_argument("--max-rate", type=per_second, default=limits.messages_per_s, metavar="N",
                   help="messages a second per connection; beyond, dropped (default %(default)s)")
    p.add_argument("--idle-timeout", type=seconds, default=limits.idle_timeout_s, metavar="S",
                   help="close a joined client silent this long; clients ping every 15 s "
                        "(default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_signal)

    p = sub.add_parser("key", help="print a new call key",
                       description="A new random call key (128 bits). Both parties of a call give it as "
                                   "--key (or in $" + ENV_VAR + "); the signalling server admits only its "
                                   "holders and the peers sign their offers with it.")
    p.set_defaults(func=cmd_key)

    sending = argparse.ArgumentParser(add_help=False)
    g = sending.add_argument_group("what this side sends")
    g.add_argument("--camera", type=camera_index, metavar="N", help="OpenCV camera index")
    g.add_argument("--video", type=Path, metavar="FILE", help="play this file as the camera")
    g.add_argument("--identity", type=Path, metavar="STILL",
                   help="the still to send (default: picked from the first 1.5 s: frontal, neutral, eyes open)")
    g.add_argument("--audio", metavar="mic|FILE|none",
                   help="voice source (default: the video file's own audio; with a camera or --camera-off, the "
                        "microphone, and none when there is none, said)")
    g.add_argument("--send-every", type=positive_int, default=CALL.send_every,
                   help="one packet every N frames at up to 30 fps, every 2N at up to 60 (default %(default)s)")
    g.add_argument("--budget", type=budget_arg, metavar="KBPS|auto",
                   help="fit what this side sends to KBPS on the wire, voice, face and headers together: "
                        "6 kbps Opus in 60 ms frames (120 ms under about 22 kbps), one feature packet every "
                        "few frames carrying several codes, delayed SCTP acknowledgements, reference stills "
                        "paced into what is left (e.g. --budget 24; 16 at least). auto: start at 32 kbps, "
                        "step down (to 24, then 16) when the other side's reports show loss beyond what the "
                        "link loses anyway, a growing round trip or a queue, and up after each quiet spell "
                        "(48, 64, then none); loss that a step down did not reduce is the link's own "
                        "(default: no budget, a packet every frame and 16 kbps Opus)")
    g.add_argument("--loss", type=_fraction, default=CALL.loss, metavar="P",
                   help="drop P %% of feature packets at random, to see concealment")
    g.add_argument("--camera-off", action="store_true",
                   help="no camera: the voice (--audio) drives the face, packets flagged as audio-derived")
    g.add_argument("--speech-after", type=wait_s, default=CALL.speech_after_no_face_s, metavar="S",
                   help="with no face in view for S seconds, let the voice drive the face (default %(default)s)")
    g.add_argument("--no-speech-fallback", action="store_true", help="never let the voice drive the face")
    g.add_argument("--max-frames", type=positive_int, help="stop after this many frames")

    receiving = argparse.ArgumentParser(add_help=False)
    g = receiving.add_argument_group("what this side shows")
    g.add_argument("--output", type=output_video, metavar="OUT.mp4", help="record the call here (.mp4/.mov/.mkv)")
    g.add_argument("--window", action="store_true", help="show the call in a window (needs a display)")
    g.add_argument("--play-voice", action=argparse.BooleanOptionalAction,
                   help="play the other side's voice on this machine's default sound output (through ALSA; "
                        "default: with --window)")
    g.add_argument("--fps", type=display_rate, default=CALL.display_fps, help="display rate (default %(default)s)")
    g.add_argument("--playout-delay", type=playout_delay_ms, default=CALL.playout_delay_ms, metavar="MS",
                   help="a fixed jitter buffer delay behind the sender's clock (default: adaptive, the "
                        f"packet spacing plus the jitter seen, at most {CALL.max_playout_delay_ms:g} ms)")
    g.add_argument("--duration", type=seconds, metavar="S", help="stop after this many seconds")
    g.add_argument("--rejoin-wait", type=wait_s, default=CALL.rejoin_wait_s, metavar="S",
                   help="after losing the other side, wait this long for it to come back (default %(default)s)")
    g.add_argument("--audio-fallback", action="store_true",
                   help="when feature packets stop but the voice goes on, drive the face from the voice")
    add_model_options(g)
    g.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for the networks: the mouth generator on the frames (default: every "
                        "core; fewer when something else, such as a sender, runs on the same machine) and "
                        "the full-frame generator repairing the still in its own process (default: one)")

    p = sub.add_parser("send", parents=[common, sending], help="the caller's side of a one-way call",
                       description="Capture from a camera or a file (at its own frame rate), track the face, "
                                   "send the still once on the reliable 'identity' channel and one feature "
                                   "packet per sent frame on the unreliable 'features' channel, with the "
                                   "voice as a 16 kbps mono Opus track.")
    p.add_argument("--stats", type=output_file, help="write the sender's statistics (JSON)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("receive", parents=[common, receiving], help="the callee's side of a one-way call",
                       description="Cache the still, play feature packets out through a jitter buffer, "
                                   "rebuild every frame, show it (--window) and/or record it with the "
                                   "received audio, and report kbps, fps and glass-to-glass latency.")
    p.add_argument("--stats", type=output_file, metavar="STATS.json", help="write the call's statistics here")
    p.set_defaults(func=cmd_receive)

    p = sub.add_parser("call", parents=[common, sending, receiving],
                       help="a two-way call: one command per person",
                       description="Both directions over one peer connection: this side sends its face "
                                   "(still, features, reference stills, voice) as `send` does and rebuilds "
                                   "the other's as `receive` does. Both parties run it with the same --room "
                                   "and --key (the first without a key makes one and prints it); the first in "
                                   "the room offers, the second answers. With --window: the other person "
                                   "large, yourself small, a status line; keys q/Esc hang up, m mutes the "
                                   "voice, c turns the camera off (the voice then drives your face) and on.")
    p.add_argument("--stats", type=output_file, metavar="STATS.json",
                   help="write both directions' statistics here ('sent', 'received')")
    p.add_argument("--echo-cancel", action=argparse.BooleanOptionalAction,
                   help="take the other side's voice, played out of the loudspeaker, back out of the "
                        "microphone before sending it (speex's echo canceller at 16 kHz; default: when the "
                        "voice is a microphone's and the other's is played)")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("demo", help="a whole call on loopback from a video file",
                       description="Start the signalling server, a receiver and a sender as separate "
                                   "processes on 127.0.0.1, play the clip through a real WebRTC call, and "
                                   "write the received video and STATS.json (latency, fps, kbps).")
    p.add_argument("--video", required=True, type=Path, help="the clip to send")
    p.add_argument("--two-way", action="store_true",
                   help="a two-way call instead: two `callsynth call` processes, --video on side a and "
                        "--video2 on side b, each rebuilding the other")
    p.add_argument("--video2", type=Path, metavar="FILE",
                   help="with --two-way, side b's clip (default: another held-out clip)")
    p.add_argument("--out", type=output_folder, default=Path("out/demo_call"),
                   help="output folder (default out/demo_call)")
    p.add_argument("--identity", type=Path, help="still to send (default: picked by the sender)")
    p.add_argument("--loss", type=_fraction, default=CALL.loss, metavar="P", help="drop P %% of feature packets")
    p.add_argument("--budget", type=budget_arg, metavar="KBPS|auto",
                   help="each sending side fits what it sends to KBPS on the wire, or follows the link "
                        "(auto; see `send --help`)")
    p.add_argument("--send-every", type=positive_int, default=CALL.send_every,
                   help="one packet every N frames at up to 30 fps, every 2N at up to 60 (default %(default)s)")
    p.add_argument("--playout-delay", type=playout_delay_ms, default=CALL.playout_delay_ms, metavar="MS",
                   help="a fixed playout delay for the receiving side(s) (default: adaptive)")
    p.add_argument("--audio", metavar="FILE|none", help="voice (default: the clip's own audio)")
    p.add_argument("--max-frames", type=positive_int, help="send at most this many frames")
    p.add_argument("--camera-off", action="store_true",
                   help="send no video: the clip's sound drives the still (its first frame unless --identity)")
    p.add_argument("--audio-fallback", action="store_true",
                   help="the receiver drives the face from the voice when feature packets stop")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)


def budget_arg(text: str) -> float | str:
    """--budget: a number of kbps, or auto."""
    from .budget import AUTO

    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of kbps nor 'auto'") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"a budget is a positive number of kbps, not {text}")
    return value


def fix_ice_hosts(args) -> None:
    if hasattr(args, "ice_host") and not args.ice_host:
        args.ice_host = [CALL.host]
