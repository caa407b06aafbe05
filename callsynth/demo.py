"""`callsynth demo`: a whole call on loopback — signalling server, receiver and sender as three separate
processes, exactly the commands a person would start by hand — and one STATS.json that sums it up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from receiver.renderer import DEFAULT_MODEL
from sender.capture import CAMERA_ADVICE

from .call_key import ENV_VAR, CallKey
from .call_options import CALL
from .json_text import to_json
from .media import moving_video_info
from .outputs import same_file


class DemoError(RuntimeError):
    """A process of the demo call failed; the message carries the end of its log."""


def _not_recorded_over(videos, recordings: list[Path]) -> None:
    """ValueError when a clip to send is where the demo records the call (`--video out/received.mp4` with
    `--out out`: the recording was written over the clip as it was being sent)."""
    for video in videos:
        for recording in recordings:
            if same_file(Path(video), recording):
                raise ValueError(f"the clip {video} is where the demo records the call: it would be written over "
                                 f"as it is sent; copy it elsewhere or give another --out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((CALL.host, 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise DemoError(f"signalling server exited early:\n{_tail(log)}")
        try:
            with socket.create_connection((CALL.host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"signalling server did not start within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(args: list[str], log: Path, key: CallKey | None = None) -> subprocess.Popen:
    """One callsynth process; the call key travels in its environment, not on a command line that any
    user of the machine can read."""
    env = dict(os.environ, **({ENV_VAR: key.text} if key else {}))
    return subprocess.Popen([sys.executable, "-m", "callsynth.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


def _wait_for_all(processes: dict[str, tuple[subprocess.Popen, Path]], timeout: float,
                  until: set[str] | None = None, when: str = "in time") -> None:
    """The clean exit of every process (or of those named in `until`) within `timeout` s, or a DemoError with
    the end of its log ("did not finish {when}"); the first of them all to fail is a DemoError at once.
    Waited for one after the other, a side that failed at its start (a clip with no face) was reported as
    the other side's not finishing in time, minutes later: that side waits for its peer."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for what, (process, log) in processes.items():
            code = process.poll()
            if code is None:
                running.append(what)
            elif code != 0:
                raise DemoError(f"{what} failed (exit {code}):\n{_tail(log)}")
        running = [what for what in running if until is None or what in until]
        if not running:
            return
        if time.monotonic() > deadline:
            what = running[0]
            raise DemoError(f"{what} did not finish {when}:\n{_tail(processes[what][1])}")
        time.sleep(0.2)


def stop_processes(processes: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Terminate what still runs, and kill what does not stop within grace_s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()


def _after_ctrl_c(hang_up: list[subprocess.Popen], files: list[Path], since: float, grace_s: float = 30.0) -> None:
    """A Ctrl-C at the demo: each call process was told to end its side as a person's Ctrl-C does (a
    terminal sends it to them all; SIGTERM here, for a Ctrl-C that reached the demo alone), and the
    demo waits for that, so the call so far is kept, not thrown away; KeyboardInterrupt again (nothing to
    keep) when a side's statistics were not written since `since` (time.time()), as when the call had not
    begun: those an earlier demo left in the same --out are not this call's."""
    for process in hang_up:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in hang_up) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not all(f.exists() and f.stat().st_mtime >= since for f in files):
        raise KeyboardInterrupt


def headline(receiver: dict, sender: dict, loss: float) -> dict:
    """The figures an evaluator asks for first, read from the two sides' statistics."""
    wire = receiver.get("on_wire", {})
    return {
        "fps": receiver["fps"],
        "fps_min_1s": receiver["fps_min_1s"],
        "latency_ms_p50": receiver["latency_ms"]["p50"],
        "latency_ms_p95": receiver["latency_ms"]["p95"],
        "features_payload_kbps": receiver["features"]["payload_kbps"],
        "features_on_wire_kbps": wire.get("features_kbps"),
        "audio_on_wire_kbps": wire.get("audio_kbps"),
        "total_on_wire_kbps": wire.get("total_kbps"),
        "frames_shown": receiver["frames_shown"],
        "concealed_frames": receiver["concealed_frames"],
        "longest_concealed_ms": receiver.get("longest_concealed_ms"),
        "speech_driven_packets": receiver.get("speech_driven_packets", 0),
        "audio_fallback_frames": receiver.get("audio_fallback_frames", 0),
        "packets_sent": sender.get("packets_sent"),
        "packets_received": receiver["features"]["packets"],
        "packets_dropped_on_purpose": sender.get("packets_dropped_on_purpose"),
        "packets_dropped_queued": sender.get("packets_dropped_queued"),
        "codes_received": receiver["features"].get("codes"),
        # --budget auto: each change of the sender's budget (kbps, None for none) with its time and reason
        "budget_changes": [f"{c['at_s']:.0f} s: {c['budget_kbps'] or 'none'} ({c['why']})"
                           for c in sender.get("plan_changes", [])],
        "loss_setting_pct": round(loss * 100, 2),
        "still_cached": receiver["still_cached"],
        # reference stills (mouth open, eyes closed) cross the same SCTP association as the features, so
        # the features' on-wire rate includes them: a one-off cost of the first seconds, not a rate
        "references_received": receiver.get("references_received", 0),
        "reference_bytes": receiver.get("reference_bytes", 0),
        # open mouths the receiver drew from the picture the sender named, and by its own choice
        "mouth_sources": receiver.get("mouth_sources", {}),
        # adaptive quality: what the receiver rendered at the end and how often it changed; the sender's
        # tracking the same way
        "receiver_quality": receiver.get("quality_now"),
        "receiver_quality_steps": len(receiver.get("quality", {}).get("steps", [])),
        # the frames whose network (the mouth generator, under either model) ran on the frame's path
        "receiver_repaired_frames": receiver.get("quality", {}).get("frames_costly"),
        # under the full-frame generator: its repairs of the still beside the frames
        "receiver_still_repairs": receiver.get("still_repair", {}).get("repairs"),
        "receiver_still_repair_interval_s": receiver.get("still_repair", {}).get("interval_s"),
        "sender_tracking": sender.get("tracking", {}).get("now"),
        "receiver_peak_memory_mb": receiver.get("peak_memory_mb"),
        # the full-frame generator's own process, which repairs the still beside the receiver
        "receiver_repairer_peak_memory_mb": receiver.get("still_repair", {}).get("process_peak_memory_mb"),
        "receiver_repairer_proportional_mb": receiver.get("still_repair", {}).get("process_proportional_mb"),
    }


def receiver_threads() -> int:
    """The receiver's torch threads in a demo: half the cores, as the sender tracks on the same machine
    (with both busy on every core, OpenMP threads wait on each other: on 2 cores the call showed
    17.5 fps with 2 threads, 22.2–23.3 with 1)."""
    return max(1, (os.cpu_count() or 2) // 2)


def run_demo(video: Path, out: Path, identity: Path | None = None, loss: float = 0.0,
             send_every: int = CALL.send_every, delay_ms: float | None = CALL.playout_delay_ms,
             audio: str | None = None,
             max_frames: int | None = None, camera_off: bool = False, audio_fallback: bool = False,
             model: str = DEFAULT_MODEL, generator: Path | None = None, budget: float | None = None,
             repair_every: int = CALL.repair_still_every) -> dict:
    info = moving_video_info(video, CAMERA_ADVICE)  # a clear MediaError before any process starts
    _not_recorded_over([video], [out / "received.mp4"])
    out.mkdir(parents=True, exist_ok=True)
    port, room, key = free_port(), "demo", CallKey.new()
    url = f"ws://{CALL.host}:{port}"
    files = {"video": out / "received.mp4", "stats": out / "STATS.json",
             "receiver_stats": out / "receiver_stats.json", "sender_stats": out / "sender_stats.json"}
    logs = {name: out / f"{name}.log" for name in ("signal", "receiver", "sender")}
    started = time.time()
    server = _spawn(["signal", "--port", str(port)], logs["signal"])
    processes, interrupted = [server], False
    try:
        _wait_for_port(port, server, logs["signal"])
        receiver = _spawn(["receive", "--signal", url, "--room", room, "--output", str(files["video"]),
                           "--stats", str(files["receiver_stats"]),
                           "--rejoin-wait", "10", "--model", model, "--repair-every", str(repair_every)]
                          + (["--audio-fallback"] if audio_fallback else [])
                          + (["--generator", str(generator)] if generator else [])
                          + ["--threads", str(receiver_threads())]
                          + (["--playout-delay", str(delay_ms)] if delay_ms is not None else []),
                          logs["receiver"], key)
        processes.append(receiver)
        send = ["send", "--signal", url, "--room", room, "--stats", str(files["sender_stats"]),
                "--send-every", str(send_every), "--loss", str(loss * 100)] + \
            (["--budget", str(budget)] if budget else [])
        if camera_off:   # the clip's sound drives its own first frame
            send += ["--camera-off", "--identity", str(identity or video), "--audio", str(audio or video)]
        else:
            send += ["--video", str(video)] + (["--identity", str(identity)] if identity else [])
        if audio and not camera_off:
            send += ["--audio", audio]
        if max_frames:
            send += ["--max-frames", str(max_frames)]
        sender = _spawn(send, logs["sender"], key)
        processes.append(sender)
        seconds = (info.frames or 30 * 60) / info.fps
        try:
            # the receiver failing at its start (a model file it cannot read) is said as it exits, not as the
            # sender's not finishing in time (it waits for a receiver) 90 s after the clip's length
            _wait_for_all({"sender": (sender, logs["sender"]), "receiver": (receiver, logs["receiver"])},
                          seconds + 90, until={"sender"})
            _wait_for_all({"receiver": (receiver, logs["receiver"])}, 30, when="after the hang-up")
        except KeyboardInterrupt:
            interrupted = True
            _after_ctrl_c([sender, receiver], [files["receiver_stats"], files["sender_stats"]], started)
    finally:
        stop_processes(processes)
    receiver_stats = json.loads(files["receiver_stats"].read_text())
    sender_stats = json.loads(files["sender_stats"].read_text())
    from .machine import cpu_description

    report = {"clip": str(video), "cpu": cpu_description(), "interrupted": interrupted,
              "headline": headline(receiver_stats, sender_stats, loss),
              "receiver": receiver_stats, "sender": sender_stats,
              "files": {k: str(v) for k, v in files.items()}, "logs": {k: str(v) for k, v in logs.items()}}
    files["stats"].write_text(to_json(report))
    frames_csv = files["receiver_stats"].with_suffix(".frames.csv")
    if frames_csv.exists():
        from .call_plot import plot_call

        files["plot"] = out / "latency.png"
        plot_call(frames_csv, files["plot"], title=f"callsynth demo call: {Path(video).name}, "
                                                   f"{loss * 100:g} % feature packets dropped")
        report["files"]["plot"] = str(files["plot"])
        files["stats"].write_text(to_json(report))
    return report


def side_headline(stats: dict) -> dict:
    """One side of a two-way call, as it saw the other: frame rate, latency, interpolated share, bytes."""
    received = stats["received"]
    shown = max(1, received["frames_shown"])
    wire = received.get("on_wire", {})
    return {
        "role": stats.get("role"),
        "fps": received["fps"],
        "fps_min_1s": received["fps_min_1s"],
        "latency_ms_p50": received["latency_ms"]["p50"],
        "latency_ms_p95": received["latency_ms"]["p95"],
        "frames_shown": received["frames_shown"],
        "interpolated_share": round(1 - received["concealed_frames"] / shown, 3),
        "longest_concealed_ms": received.get("longest_concealed_ms"),
        "received_on_wire_kbps": wire.get("total_kbps"),
        "received_features_on_wire_kbps": wire.get("features_kbps"),
        "received_audio_on_wire_kbps": wire.get("audio_kbps"),
        "sent_payload_kbps": stats["sent"].get("payload_kbps"),
        "sent_tracking": stats["sent"].get("tracking", {}).get("now"),
        "quality": received.get("quality_now"),
        "peak_memory_mb": stats.get("peak_memory_mb"),
        "repairer_peak_memory_mb": received.get("still_repair", {}).get("process_peak_memory_mb"),
        "ended": stats.get("ended"),
    }


def run_two_way_demo(videos: tuple[Path, Path], out: Path, extra: list[str] | None = None,
                     model: str = DEFAULT_MODEL) -> dict:
    """Two `callsynth call` processes (a and b, one clip each) and the signalling server on 127.0.0.1: one
    two-way call, each side's received video and statistics, and a STATS.json with both."""
    infos = [moving_video_info(v, CAMERA_ADVICE) for v in videos]   # clear MediaErrors before any process starts
    _not_recorded_over(videos, [out / f"{name}_received.mp4" for name in "ab"])
    out.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), CallKey.new()
    url = f"ws://{CALL.host}:{port}"
    logs = {name: out / f"{name}.log" for name in ("signal", "a", "b")}
    started = time.time()
    server = _spawn(["signal", "--port", str(port)], logs["signal"])
    processes, sides, interrupted = [server], {}, False
    try:
        _wait_for_port(port, server, logs["signal"])
        for name, video in zip("ab", videos):
            sides[name] = _spawn(["call", "--signal", url, "--room", "demo", "--video", str(video),
                                  "--output", str(out / f"{name}_received.mp4"),
                                  "--stats", str(out / f"{name}_stats.json"), "--rejoin-wait", "10",
                                  "--model", model, "--threads", str(receiver_threads())] + (extra or []),
                                 logs[name], key)
            processes.append(sides[name])
        seconds = max((i.frames or 30 * 60) / i.fps for i in infos)
        try:
            _wait_for_all({f"side {name}": (process, logs[name]) for name, process in sides.items()},
                          seconds + 90)
        except KeyboardInterrupt:
            interrupted = True
            _after_ctrl_c(list(sides.values()), [out / f"{name}_stats.json" for name in "ab"], started)
    finally:
        stop_processes(processes)
    from .machine import cpu_description

    stats = {name: json.loads((out / f"{name}_stats.json").read_text()) for name in "ab"}
    report = {"clips": {name: str(v) for name, v in zip("ab", videos)}, "cpu": cpu_description(),
              "interrupted": interrupted,
              "headline": {name: side_headline(stats[name]) for name in "ab"}, "sides": stats,
              "logs": {k: str(v) for k, v in logs.items()}}
    (out / "STATS.json").write_text(to_json(report))
    from .call_plot import plot_call

    for name in "ab":
        frames_csv = out / f"{name}_stats.frames.csv"
        if frames_csv.exists():
            plot_call(frames_csv, out / f"{name}_latency.png",
                      title=f"two-way call, side {name} showing {Path(videos[1 - 'ab'.index(name)]).name}")
    return report
