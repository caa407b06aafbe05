import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from callsynth.cli import main
from callsynth.media import iter_frames
from receiver.renderer import DEFAULT_MODEL

from .conftest import VAL_CLIP, faceless_clip


def test_reenact_writes_output_reference_and_stats(data, tmp_path):
    clip = data / VAL_CLIP
    out, ref, stats = tmp_path / "out.mp4", tmp_path / "ref.mp4", tmp_path / "stats.json"
    rc = main(["reenact", "--identity", str(clip), "--driving", str(clip), "--output", str(out),
               "--reference-out", str(ref), "--stats", str(stats), "--max-frames", "24", "--quiet"])
    assert rc == 0
    a, b = list(iter_frames(out)), list(iter_frames(ref))
    assert len(a) == len(b) == 24 and a[0].shape == b[0].shape == (256, 256, 3)
    # Frame 0 is the still itself, warped by its own (quantised) pose.
    assert np.abs(a[0].astype(int) - b[0]).mean() < 6
    s = json.loads(stats.read_text())
    # 15 packets a second from a 25 fps clip: 3 frames of every 5 (0, 2, 4, 5, 7, ...), 14 of 24
    assert s["frames"] == 24 and s["packets"] == 14 and s["frames_no_face"] == 0
    assert 0 < s["payload_kbps_at_30fps"] <= 4.0 and s["payload_kbps"] <= 4.0
    assert {"track", "render", "decode"} <= set(s["timings_ms"])


def test_reenact_of_a_fast_camera_keeps_the_packet_rate(data, tmp_path, val_frames):
    """A 50 fps clip (each frame twice, as a phone records) is sent at the packet rate of any other camera,
    15 a second: counted in frames, one packet every 2nd frame would have doubled the payload past 4 kbps
    (and a 25 fps camera's left a fifth of it unspent)."""
    from callsynth.media import VideoWriter
    from callsynth.budget import frames_per_packet, sampled

    assert [round(frames_per_packet(fps, 2), 3) for fps in (24, 25, 30, 50, 60, 120)] == [1.6, 1.667, 2, 3.333, 4, 8]
    assert [frames_per_packet(fps, 1) for fps in (24, 25, 30, 60)] == [1, 1, 1, 2]          # every frame, at most
    assert [sampled(i, frames_per_packet(25, 2)) for i in range(10)] == [True, False, True, False, True] * 2
    assert [sampled(i, 2) for i in range(4)] == [True, False, True, False]
    assert sum(sampled(i, frames_per_packet(fps, 2)) for fps in (24, 25, 30, 60) for i in range(int(fps) * 4)) \
        == 15 * 4 * 4                                                     # 15 a second, whatever the camera
    clip, stats = tmp_path / "fast.mp4", tmp_path / "stats.json"
    writer = VideoWriter(clip, 50.0)
    for frame in val_frames[:20]:
        writer.write(frame)
        writer.write(frame)
    writer.close()
    assert main(["reenact", "--identity", str(clip), "--driving", str(clip), "--output", str(tmp_path / "o.mp4"),
                 "--stats", str(stats), "--model", "warp", "--quiet"]) == 0
    s = json.loads(stats.read_text())
    assert s["frames"] == 40 and s["send_every"] == 3.333 and s["packets"] == 12
    assert s["payload_kbps"] <= 4.0 and s["payload_kbps_at_30fps"] == pytest.approx(3.96, abs=0.1)
    assert set(s["mouth_sources"]) == {"named", "own"}     # open mouths drawn, by whose choice


def test_reenact_stopped_half_way_leaves_the_earlier_outputs_and_no_broken_file(data, tmp_path, monkeypatch):
    """An error on the sixth frame (one made to happen; a full disk or Ctrl-C does the same) leaves OUT and
    REF as they were, and no half-written file beside them."""
    from receiver.renderer import WarpRenderer

    out, ref = tmp_path / "out.mp4", tmp_path / "ref.mp4"
    out.write_bytes(b"an earlier render")
    calls = {"n": 0}
    original = WarpRenderer.render

    def failing(self, state, *args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise ValueError("stopped half way")
        return original(self, state, *args)

    monkeypatch.setattr(WarpRenderer, "render", failing)
    clip = data / VAL_CLIP
    rc = main(["reenact", "--identity", str(clip), "--driving", str(clip), "--output", str(out),
               "--reference-out", str(ref), "--max-frames", "20", "--model", "warp", "--quiet"])
    assert rc != 0 and calls["n"] == 6
    assert out.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_reenact_with_faceless_driving_frames(tmp_path, data):
    """A driving clip whose middle has no face: packets say so, output keeps every frame."""
    from callsynth.media import VideoWriter
    frames = list(iter_frames(data / VAL_CLIP, max_frames=12))
    driving = tmp_path / "gap.mp4"
    with VideoWriter(driving, 25) as w:
        for i, f in enumerate(frames):
            w.write(np.zeros_like(f) if 4 <= i < 8 else f)
    stats = tmp_path / "s.json"
    rc = main(["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(driving),
               "--output", str(tmp_path / "o.mp4"), "--stats", str(stats), "--quiet"])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert s["frames"] == 12 and s["frames_no_face"] == 4
    assert len(list(iter_frames(tmp_path / "o.mp4"))) == 12


def test_a_video_that_opens_without_a_face_gives_its_first_face_as_the_still(tmp_path, data, caplog):
    """A clip that fades in from black as --identity (and as the driving clip whose first face the codes are
    measured from): the still is its first frame with a face, said so; its first frame alone was refused
    as showing no face."""
    from callsynth.media import VideoWriter
    frames = list(iter_frames(data / VAL_CLIP, max_frames=10))
    faded = tmp_path / "faded.mp4"
    with VideoWriter(faded, 25) as w:
        for i, f in enumerate(frames):
            w.write(np.zeros_like(f) if i < 3 else f)
    stats = tmp_path / "s.json"
    with caplog.at_level("INFO", logger="callsynth.still"):
        assert main(["reenact", "--identity", str(faded), "--driving", str(faded), "--relative",
                     "--output", str(tmp_path / "o.mp4"), "--stats", str(stats), "--quiet"]) == 0
    assert "the still is frame 3" in caplog.text
    s = json.loads(stats.read_text())
    assert s["frames"] == 10 and s["frames_no_face"] == 3


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_bad_identity_gives_a_clear_error(tmp_path, data, capsys, content):
    bad = tmp_path / "still.png"
    bad.write_bytes(content)
    rc = main(["reenact", "--identity", str(bad), "--driving", str(data / VAL_CLIP),
               "--output", str(tmp_path / "o.mp4"), "--quiet"])
    assert rc == 2
    assert "still.png" in capsys.readouterr().err


def test_identity_without_a_face(tmp_path, data, capsys):
    from callsynth.media import VideoWriter
    blank = tmp_path / "blank.mp4"
    with VideoWriter(blank, 25) as w:
        w.write(np.full((128, 128, 3), 90, np.uint8))
    rc = main(["reenact", "--identity", str(blank), "--driving", str(data / VAL_CLIP),
               "--output", str(tmp_path / "o.mp4"), "--quiet"])
    assert rc == 2 and "no face" in capsys.readouterr().err


def test_a_long_video_without_a_face_is_refused_after_its_first_seconds(tmp_path, data, capsys):
    """A wrong file as --identity (a long recording that never shows a face) was tracked to its end before
    it was refused; the search for the still's frame stops after the first 30 s, and says so."""
    from callsynth.media import VideoWriter
    blank = tmp_path / "screen_recording.mp4"
    with VideoWriter(blank, 2) as w:                        # 45 s at 2 frames a second
        for i in range(90):
            w.write(np.full((64, 64, 3), i, np.uint8))
    rc = main(["reenact", "--identity", str(blank), "--driving", str(data / VAL_CLIP),
               "--output", str(tmp_path / "o.mp4"), "--quiet"])
    assert rc == 2 and "no face found in its first 30 s" in capsys.readouterr().err


def test_eval_writes_report_table_and_plot(data, tmp_path):
    rc = main(["eval", "--clips", str(data / VAL_CLIP), "--codecs", "vp9,x264", "--kbps", "8",
               "--max-frames", "20", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {(r["method"], r["setting"]): r for r in report["summary"]}
    warp = [r for (m, _), r in rows.items() if m == "callsynth-warp"]
    assert len(warp) == 3 and all(r["nme"] < 3.5 for r in warp)
    assert any(m == "vp9" for m, _ in rows) and any(m == "x264" for m, _ in rows)
    generator = rows[(f"callsynth-{DEFAULT_MODEL}", "15 packets/s")]     # the default renderer, measured
    assert generator["nme"] < 3.5 and 0 < generator["ssim"] <= 1 and generator["mouth_l1"] > 0
    assert "| callsynth-warp |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "rate_distortion.png").read_bytes()[:4] == b"\x89PNG"
    # eyes, gaze and the mouth interior, and the code's own share of the landmark error
    clip = [r for r in report["per_clip"] if r["method"] == "callsynth-warp"][1]
    assert {"openness_r", "blink_recall", "gaze_r", "teeth_share_out", "teeth_share_truth", "interior_l1",
            "code_nme", "reference_bytes"} <= set(clip)
    assert 0 <= clip["code_nme"] < clip["nme"] + 1 and clip["reference_bytes"] <= 60_000
    assert "Eyes, gaze and mouth interior" in (tmp_path / "report.md").read_text()
    strip = tmp_path / "strips" / f"{Path(VAL_CLIP).stem}.jpg"
    assert strip.read_bytes()[:2] == b"\xff\xd8"


def test_eval_names_two_clips_of_one_file_name_apart(data, tmp_path):
    """Two folders' clip.mp4 (as an evaluator's set may hold): the second's strip was written over the
    first's and their rows in report.md read alike. Each is named with its folder where the names meet."""
    import shutil

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = shutil.copy(data / VAL_CLIP, tmp_path / "a" / "clip.mp4")
    second = shutil.copy(data / "video/grid_s1/bbaf2n.mp4", tmp_path / "b" / "clip.mp4")
    out = tmp_path / "report"
    assert main(["eval", "--clips", str(first), str(second), "--codecs", "", "--max-frames", "6", "--warp-only",
                 "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["names"] == {str(first): "a_clip", str(second): "b_clip"}
    strips = {p.name: cv2.imread(str(p)) for p in (out / "strips").iterdir()}
    assert set(strips) == {"a_clip.jpg", "b_clip.jpg"}
    assert np.abs(strips["a_clip.jpg"].astype(int) - strips["b_clip.jpg"]).mean() > 5     # two clips' pictures
    text = (out / "report.md").read_text()
    assert "| a_clip | callsynth-warp |" in text and "| b_clip | callsynth-warp |" in text
    assert "![a_clip](strips/a_clip.jpg)" in text


def test_ctrl_c_during_eval_writes_the_report_of_the_clips_done(data, tmp_path, ctrl_c_as_at_a_terminal):
    """Ctrl-C (a real SIGINT to a real `callsynth eval`) lost every clip's figures (the validation set is a
    15-minute run); now the report of the clips done is written, saying it was interrupted and naming the
    clips not evaluated."""
    import signal
    import subprocess
    import sys
    import time

    clips = [str(data / VAL_CLIP), str(data / "video/grid_s1/bbaf2n.mp4"), str(data / "video/grid_s1/bbal6n.mp4")]
    out = tmp_path / "report"
    run = subprocess.Popen([sys.executable, "-m", "callsynth.cli", "eval", "--clips", *clips, "--codecs", "",
                            "--max-frames", "40", "--warp-only", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_done = out / "strips" / f"{Path(VAL_CLIP).stem}.jpg"      # a clip's last step without codecs
        deadline = time.time() + 300
        while not first_done.exists() and run.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first_done.exists(), run.communicate(timeout=5)[0] if run.poll() is not None else ""
        time.sleep(0.3)
        run.send_signal(signal.SIGINT)
        said = run.communicate(timeout=120)[0]
    finally:
        run.kill()
    assert run.returncode == 130, said
    report = json.loads((out / "report.json").read_text())
    n = report["interrupted"]["clips_done"]
    assert 1 <= n < 3 and report["clips"] == clips[:n] and report["interrupted"]["not_evaluated"] == clips[n:]
    assert f"eval: interrupted after {n} of 3 clips; the report of those is in {out / 'report.md'}" in said
    text = (out / "report.md").read_text()
    assert f"**Interrupted** (Ctrl-C) after {n} of 3 clips" in text and f"- {clips[2]}" in text


def test_eval_warp_only_leaves_the_generator_out(data, tmp_path):
    assert main(["eval", "--clips", str(data / VAL_CLIP), "--codecs", "", "--max-frames", "10",
                 "--warp-only", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text(), parse_constant=_not_json)
    assert {r["method"] for r in report["summary"]} == {"callsynth-warp"}
    # no blink in these frames: the recall that cannot be measured is null (it was NaN, which is not JSON:
    # JavaScript's JSON.parse refused the whole report)
    assert {r["blink_recall"] for r in report["per_clip"]} == {None}


def _not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_a_figure_that_could_not_be_measured_is_written_as_json_null():
    from callsynth.json_text import to_json

    text = to_json({"nme": float("nan"), "kbps": [float("inf"), 1.5], "p": (2, -float("inf")), "s": "nan"})
    assert json.loads(text, parse_constant=_not_json) == {"nme": None, "kbps": [None, 1.5], "p": [2, None],
                                                          "s": "nan"}


def test_eval_people_selection_takes_the_split_s_selection_clips(tmp_path, capsys):
    """`--people selection` evaluates the identity split's selection clips (the runs README quotes beside
    the validation ones), and names no clip twice; with --clips as well it is a usage error."""
    from callsynth.split import selection_files

    assert main(["eval", "--people", "selection", "--codecs", "", "--max-frames", "2", "--warp-only",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["clips"] == [str(c) for c in selection_files()] and len(report["clips"]) >= 5
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--people", "selection", "--clips", "x.mp4", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_eval_rejects_unknown_codec(tmp_path, capsys):
    assert main(["eval", "--codecs", "mpeg2", "--out", str(tmp_path)]) == 2
    assert "unknown codec" in capsys.readouterr().err


def test_eval_skips_a_bad_clip_and_keeps_the_others(data, tmp_path, capsys):
    """One unreadable file or faceless clip among many is reported and left out of the means, not a
    crash that throws the other clips' work away; with no usable clip at all it is an error."""
    faceless = faceless_clip(tmp_path / "faceless.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    picture = tmp_path / "face.png"        # a picture scored one frame, and x264 its one keyframe's kbps
    cv2.imwrite(str(picture), next(iter_frames(data / VAL_CLIP, 1))[:, :, ::-1])
    out = tmp_path / "report"
    assert main(["eval", "--clips", str(faceless), str(data / VAL_CLIP), str(text), str(picture), "--codecs", "",
                 "--max-frames", "10", "--warp-only", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clips"] == [str(data / VAL_CLIP)]
    assert {s["clip"] for s in report["skipped"]} == {str(faceless), str(text), str(picture)}
    assert f"{picture}: a still picture, not a video: a clip to reenact must move" in (out / "report.md").read_text()
    assert all(r["clips"] == 1 for r in report["summary"])
    assert "no face" in (out / "report.md").read_text() and "skipping" in capsys.readouterr().err
    assert main(["eval", "--clips", str(faceless), "--codecs", "", "--warp-only", "--out", str(out)]) == 2
    said = capsys.readouterr().err       # and the report left in --out is not taken for this run's
    assert "no clip could be evaluated" in said
    assert f"no report written (the report in {out} is an earlier run's)" in said


def test_a_camera_that_cannot_be_opened_is_said_in_one_line(tmp_path):
    """`send --camera N` with no such camera: one clear line, not OpenCV's backends' probing errors first
    (they are written by OpenCV itself, so the command runs as a process of its own here)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "callsynth.cli", "send", "--room", "r", "--camera", "99",
                          "--signal", "ws://127.0.0.1:9"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert any("camera 99: cannot be opened" in line for line in lines), run.stderr
    assert not any("ERROR" in line or "WARN" in line for line in lines), run.stderr


@pytest.mark.parametrize("command", [
    ["reenact", "--identity", "{clip}", "--driving", "{clip}", "--output", "{file}/out.mp4"],
    ["reenact", "--identity", "{clip}", "--driving", "{clip}", "--output", "{folder}"],
    ["reenact", "--identity", "{clip}", "--driving", "{clip}", "--output", "o.mp4", "--stats", "{file}/s/s.json"],
    ["eval", "--clips", "{clip}", "--out", "{file}/report"],
    ["eval", "--clips", "{clip}", "--out", "{file}"],
    ["combine", "--identity", "{clip}", "--attribute", "{clip}", "--output", "{folder}"],
    ["audio2exp", "--identity", "{clip}", "--audio", "{clip}", "--output", "{file}/talk.mp4"],
    ["receive", "--room", "r", "--output", "{file}/rx.mp4"],
    ["demo", "--video", "{clip}", "--out", "{file}"],
])
def test_an_output_that_cannot_be_written_is_said_before_any_work(command, data, tmp_path, capsys):
    """A folder that is a file, or a file name that is a folder: refused as the command line is read (it
    once ran the whole render first and ended in a traceback)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = [a.format(clip=data / VAL_CLIP, file=blocker, folder=tmp_path) for a in command]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err and ("is a file" in err or "is a folder" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]        # nothing made


@pytest.mark.parametrize("command", [
    ["reenact", "--identity", "{clip}", "--driving", "{clip}", "--output", "{out}/out.webm"],
    ["reenact", "--identity", "{clip}", "--driving", "{clip}", "--output", "{out}/o.mp4",
     "--reference-out", "{out}/r.gif"],
    ["combine", "--identity", "{clip}", "--attribute", "{clip}", "--output", "{out}/c.avi"],
    ["audio2exp", "--identity", "{clip}", "--audio", "{clip}", "--output", "{out}/talk"],
    ["receive", "--room", "r", "--output", "{out}/rx.webm"],
    ["call", "--room", "r", "--output", "{out}/call.gif"],
])
def test_a_video_output_in_a_container_without_h264_is_said_before_any_work(command, data, tmp_path, capsys):
    """The videos are H.264 with AAC sound: a .webm or .gif output failed as the render began to write, and
    a call's recording to one ended the call as the still came. Refused as the command line is read."""
    args = [a.format(clip=data / VAL_CLIP, out=tmp_path / "out") for a in command]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "a video is written as H.264" in err and ".mp4, .m4v, .mov, .mkv" in err
    assert not (tmp_path / "out").exists()                                # nothing made


def test_a_place_the_disk_refuses_is_said_with_its_name(data, tmp_path, capsys, monkeypatch):
    """What the command-line check cannot foresee (here: a folder whose files the system refuses) is said
    with the output's name when writing starts, before the work, and leaves nothing behind."""
    from pathlib import Path as _Path

    real_touch = _Path.touch

    def refused(self, *a, **k):
        if self.parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_touch(self, *a, **k)

    monkeypatch.setattr(_Path, "touch", refused)
    out = tmp_path / "out.mp4"
    rc = main(["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(data / VAL_CLIP),
               "--output", str(out), "--max-frames", "4", "--quiet"])
    assert rc == 1                            # a system error, not a usage error
    err = capsys.readouterr().err
    assert f"error: {out} cannot be written there (Permission denied)" in err
    assert "[Errno" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_where_no_file_can_be_made_is_said_in_words_before_the_work(data, capsys):
    """/proc takes no new files or folders, whoever asks: an output there, or in a folder to be made there,
    is a usage error naming it with the system's reason, without Python's errno prefix, before any frame.
    Root's permission to write passes os.access there, and fit-basis fitted for minutes and failed at the
    save: the command line's check now makes a nameless file to know, for root and anyone else alike."""
    import os

    for args in (["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(data / VAL_CLIP),
                  "--output", "/proc/callsynth_out.mp4", "--max-frames", "4", "--quiet"],
                 ["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(data / VAL_CLIP),
                  "--output", "/proc/callsynth_dir/out.mp4", "--max-frames", "4", "--quiet"],
                 ["fit-basis", "--out", "/proc/callsynth_basis.npz"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2, err
        if os.access("/proc", os.W_OK):
            assert "/proc takes no new file (" in err, err
        else:
            assert "/proc cannot be written" in err, err
        assert "[Errno" not in err and "Traceback" not in err
    assert not Path("/proc/callsynth_dir").exists()


def test_every_default_is_read_from_one_options_dataclass(tmp_path):
    """An option's default lives once, in call_options.CALL, tool_options.TOOLS or a training options
    dataclass: the command line, the call's option dataclasses and the functions the commands call read it
    there, so changing it there changes it everywhere (a literal written again would drift)."""
    import inspect

    from callsynth.bench import bench
    from callsynth.call_options import CALL
    from callsynth.cli import build_parser
    from callsynth.eval.run import run_eval
    from callsynth.face.fit_basis import fit_basis
    from callsynth.face.landmark_cache import track_many
    from callsynth.rtc import new_peer_connection
    from callsynth.signalling import run_server
    from callsynth.tool_options import TOOLS
    from receiver.call import ReceiverOptions
    from sender.call import SenderOptions

    parse = build_parser().parse_args
    ev = parse(["eval", "--out", str(tmp_path)])
    assert (ev.people, ev.codecs.split(","), ev.kbps) == (TOOLS.people, list(TOOLS.codecs), TOOLS.codec_kbps)
    fb = parse(["fit-basis"])
    assert (fb.code_bits, fb.max_components, fb.max_grid_s1, fb.workers) == \
        (TOOLS.code_bits, TOOLS.max_components, TOOLS.max_grid_s1, TOOLS.workers)
    signature = inspect.signature(fit_basis).parameters
    assert all(signature[k].default == getattr(TOOLS, k)
               for k in ("code_bits", "max_components", "max_grid_s1", "frames_per_clip", "workers"))
    assert inspect.signature(track_many).parameters["workers"].default == TOOLS.workers
    assert inspect.signature(run_eval).parameters["kbps"].default == TOOLS.codec_kbps
    assert parse(["bench"]).frames == inspect.signature(bench).parameters["frames"].default == TOOLS.bench_frames
    assert str(parse(["train-mouth"]).out) == TOOLS.mouth_out
    signal = parse(["signal"])
    assert (signal.host, signal.port) == (CALL.host, CALL.signalling_port)
    server = inspect.signature(run_server).parameters
    assert (server["host"].default, server["port"].default) == (CALL.host, CALL.signalling_port)
    assert inspect.signature(new_peer_connection).parameters["hosts"].default == (CALL.host,)
    send = parse(["send", "--room", "r", "--video", "x.mp4"])
    assert (send.loss, send.speech_after, send.send_every) == (CALL.loss, CALL.speech_after_no_face_s,
                                                               CALL.send_every)
    sender = SenderOptions(url="ws://x", room="r")
    assert (sender.loss, sender.speech_after_no_face_s, sender.hosts) == \
        (CALL.loss, CALL.speech_after_no_face_s, (CALL.host,))
    assert ReceiverOptions(url="ws://x", room="r").hosts == (CALL.host,)
    assert parse(["audio2exp", "--audio", "a.wav", "--identity", "i.png",
                  "--output", str(tmp_path / "o.mp4")]).fps == CALL.display_fps


@pytest.mark.parametrize("command, option", [
    (["audio2exp", "--identity", "{clip}", "--audio", "{clip}", "--output", "{out}/talk.mp4", "--fps", "0"], "--fps"),
    (["audio2exp", "--identity", "{clip}", "--audio", "{clip}", "--output", "{out}/talk.mp4", "--fps", "-5"], "--fps"),
    (["receive", "--room", "r", "--fps", "0"], "--fps"),
    (["receive", "--room", "r", "--fps", "nan"], "--fps"),
    (["receive", "--room", "r", "--playout-delay", "-20"], "--playout-delay"),
    (["receive", "--room", "r", "--playout-delay", "9000"], "--playout-delay"),
    (["receive", "--room", "r", "--duration", "0"], "--duration"),
    (["receive", "--room", "r", "--rejoin-wait", "inf"], "--rejoin-wait"),
    (["send", "--room", "r", "--camera", "-1"], "--camera"),
    (["send", "--room", "r", "--video", "{clip}", "--speech-after", "-1"], "--speech-after"),
    (["send", "--room", "r", "--video", "{clip}", "--budget", "inf"], "--budget"),
    (["signal", "--port", "70000"], "--port"),
    (["signal", "--max-rate", "0"], "--max-rate"),
    (["signal", "--idle-timeout", "-1"], "--idle-timeout"),
    (["audio2exp-train", "--out", "{out}", "--gap-weight", "-1"], "--gap-weight"),
    (["audio2exp-train", "--out", "{out}", "--background-snr", "5", "nan"], "--background-snr"),
    (["audio2exp-eval", "--align-dir", "{out}/align"], "--align-dir"),
    (["eval", "--out", "{out}", "--kbps", "8,nan"], "--kbps"),
    (["eval", "--out", "{out}", "--kbps", "inf"], "--kbps"),
    (["eval", "--out", "{out}", "--kbps", ","], "--kbps"),
    (["receive", "--room", ""], "--room"),               # an unset shell variable: a room like any other
    (["call", "--room", "  ", "--video", "{clip}"], "--room"),
])
def test_a_number_out_of_its_range_is_a_usage_error_naming_the_option(command, option, data, tmp_path, capsys):
    """`type=float` took 0, -5, nan and inf: `receive --fps 0` ended in a ZeroDivisionError as the call
    began, `audio2exp --fps 0` wrote a video of no frames and exited 0, `--budget inf` an OverflowError.
    Each number's range is checked as the command line is read (callsynth.arg_types); nothing is made."""
    args = [a.format(clip=data / VAL_CLIP, out=tmp_path / "out") for a in command]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_noise_range_given_high_first_is_refused_not_turned_round(tmp_path, capsys):
    """`audio2exp-train --background-snr 25 5` was sorted into 5-25 dB without a word: a typo for another
    range (25 50) trained for minutes as if it were meant."""
    assert main(["audio2exp-train", "--out", str(tmp_path / "out"), "--background-snr", "25", "5"]) == 2
    assert "--background-snr: LOW 25 dB is above HIGH 5 dB" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_no_option_reads_a_bare_float_or_int():
    """Every number on a command line goes through a type that checks its range (callsynth.arg_types);
    a bare float or int (a seed aside, any int is one) lets 0, negatives, nan and inf through."""
    import argparse

    from callsynth.cli import build_parser

    bare = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, sub_name)
            elif action.type in (float, int) and action.dest != "seed":
                bare.append(f"{name} {action.option_strings}")

    walk(build_parser(), "callsynth")
    assert bare == []


def test_a_data_folder_that_is_not_one_is_said(tmp_path, monkeypatch, capsys):
    """CALLSYNTH_DATA naming a folder without the media's manifest: said as such (it was "[Errno 2] No
    such file or directory: '.../manifest.csv'")."""
    monkeypatch.setenv("CALLSYNTH_DATA", str(tmp_path / "nowhere"))
    assert main(["audio2exp-eval"]) == 2
    assert f"CALLSYNTH_DATA={tmp_path / 'nowhere'} holds no manifest.csv" in capsys.readouterr().err


def test_a_port_already_taken_is_said_in_words(capsys):
    """`callsynth signal` on a port another program holds: its address and the system's reason, without
    Python's errno prefix."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc = main(["signal", "--host", "127.0.0.1", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"cannot listen on 127.0.0.1:{port}: " in err and "address already in use" in err
    assert "[Errno" not in err and "Traceback" not in err


@pytest.mark.parametrize("host, said", [("203.0.113.77", "203.0.113.77 is not an address of this machine"),
                                        ("999.1.1.1", "'999.1.1.1' is not an IP address")])
def test_an_ice_host_this_machine_does_not_have_is_a_usage_error(host, said, capsys):
    """An --ice-host the machine does not have gathered no candidate: the call waited 20 s for its channels
    and then blamed the network. Now refused as the command line is read, with the machine's addresses."""
    with pytest.raises(SystemExit) as stop:
        main(["send", "--room", "r", "--camera-off", "--identity", "x.png", "--ice-host", host])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --ice-host: {said}" in err and "127.0.0.1" in err


def test_a_driving_video_without_a_face_is_said_as_one(data, tmp_path, capsys):
    """A driving video that shows no face was refused with a still's advice ("use a frontal picture of the
    caller"); it is the video that needs a face."""
    driving = faceless_clip(tmp_path / "no_face.mp4")
    rc = main(["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(driving),
               "--output", str(tmp_path / "out.mp4"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{driving}: the driving video shows no face: give a video of a face to drive the still" in err
    assert not (tmp_path / "out.mp4").exists()


def test_a_picture_where_a_video_must_move_is_said(data, tmp_path, capsys):
    """FFmpeg reads a picture as a video of one frame: a picture as the camera's stand-in made a call of one
    frame, over as it began (a demo reported 42 fps over 0.04 s), and as the driving video a render of one
    frame. A picture of a face under any name (a JPEG without a suffix, a PNG named .mp4, a one-frame GIF)."""
    from PIL import Image

    frame = next(iter_frames(data / VAL_CLIP, 1))
    pictures = [tmp_path / "face", tmp_path / "face_png.mp4", tmp_path / "face.gif"]
    for path, kind in zip(pictures, ("JPEG", "PNG", "GIF")):
        Image.fromarray(frame).save(path, kind)
    camera = "a still picture, not a video: give a video to play as the camera (a picture of the caller is --identity"
    for picture in pictures:
        for args, said in (
                (["send", "--room", "r", "--video", str(picture)], camera),
                (["demo", "--video", str(picture), "--out", str(tmp_path / "demo")], camera),
                (["demo", "--two-way", "--video", str(data / VAL_CLIP), "--video2", str(picture),
                  "--out", str(tmp_path / "demo")], camera),
                (["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(picture),
                  "--output", str(tmp_path / "out.mp4"), "--quiet"], "a still picture, not a video: the driving "
                                                                   "video must move")):
            rc = main(args)
            err = capsys.readouterr().err
            assert rc == 2, (args, err)
            assert f"{picture}: {said}" in err, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "demo" / "received.mp4").exists()


def test_an_output_that_is_another_output_or_an_input_is_refused_before_the_work(data, tmp_path, capsys):
    """Two outputs that are one file, or an output that is an input: `reenact --output clip.mp4 --driving
    clip.mp4` replaced the user's clip with the 256-px render, `--stats` named as the video wrote JSON over
    it, and `--reference-out` over `--output` left one of the two. By any spelling, or through a link."""
    import shutil

    clip = shutil.copy(data / VAL_CLIP, tmp_path / "clip.mp4")
    (tmp_path / "link.mp4").symlink_to(clip)
    before = Path(clip).read_bytes()
    out = str(tmp_path / "out.mp4")
    reenact = ["reenact", "--identity", str(data / VAL_CLIP), "--quiet"]
    for args, said in (
            (reenact + ["--driving", str(clip), "--output", out, "--reference-out", out],
             f"--output and --reference-out are the same file ({out})"),
            (reenact + ["--driving", str(clip), "--output", out, "--stats", str(tmp_path / "." / "out.mp4")],
             f"--output and --stats are the same file ({out})"),
            (reenact + ["--driving", str(clip), "--output", str(clip)],
             f"--output {clip} is also --driving: writing it would replace that input"),
            (reenact + ["--driving", str(clip), "--output", str(tmp_path / "link.mp4")],
             f"--output {tmp_path / 'link.mp4'} is also --driving"),
            (["send", "--room", "r", "--video", str(clip), "--stats", str(clip)], f"--stats {clip} is also --video"),
            (["audio2exp", "--audio", str(clip), "--identity", str(data / VAL_CLIP), "--output", str(clip)],
             f"--output {clip} is also --audio")):
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and said in err, err
    assert Path(clip).read_bytes() == before and not Path(out).exists()


def test_a_demo_clip_where_the_demo_records_the_call_is_refused(data, tmp_path, capsys):
    """`demo --video out/received.mp4 --out out` (sending again what a demo received) had the recording
    written over the clip as it was being sent; the same for a two-way side's clip."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    for name in ("received.mp4", "b_received.mp4"):
        shutil.copy(data / VAL_CLIP, out / name)
    before = (out / "received.mp4").read_bytes()
    for args, clip in ((["demo", "--video", str(out / "received.mp4"), "--out", str(out)], out / "received.mp4"),
                       (["demo", "--two-way", "--video", str(data / VAL_CLIP), "--video2", str(out / "b_received.mp4"),
                         "--out", str(out)], out / "b_received.mp4")):
        assert main(args) == 2
        assert f"the clip {clip} is where the demo records the call" in capsys.readouterr().err
    assert (out / "received.mp4").read_bytes() == before and not (out / "STATS.json").exists()


def test_statistics_refused_at_the_call_s_end_are_a_warning_not_the_end(tmp_path, caplog):
    """A call's statistics are written as it ends; a place that refuses them then (a disk that filled during
    the call; /proc here, which takes no new file, root or not) ended the command with the error alone and
    its figures lost. Now a warning, and the call's summary is still returned (sender and receiver)."""
    import logging

    from callsynth.outputs import write_stats

    log = logging.getLogger("callsynth.test")
    assert write_stats(tmp_path / "new" / "stats.json", {"frames": 3}, log)
    assert json.loads((tmp_path / "new" / "stats.json").read_text()) == {"frames": 3}
    with caplog.at_level(logging.WARNING, logger="callsynth.test"):
        assert not write_stats("/proc/callsynth_stats.json", {"frames": 3}, log)
    assert "cannot write the call's statistics to /proc/callsynth_stats.json (" in caplog.text
    assert "[Errno" not in caplog.text


def test_a_second_clip_without_two_way_is_said(data, capsys):
    """`demo --video2 FILE` without --two-way played --video alone and said nothing of the second clip."""
    assert main(["demo", "--video", str(data / VAL_CLIP), "--video2", str(data / VAL_CLIP)]) == 2
    assert "--video2 is side b's clip of a two-way demo: add --two-way" in capsys.readouterr().err


def test_a_demo_whose_receiver_fails_at_its_start_says_so_at_once(data, tmp_path, capsys):
    """The receiver cannot read its model file and exits at its start; the demo waited for the sender (which
    waits for a receiver) and reported 'sender did not finish in time' 96 s later, with the sender's log."""
    bad = tmp_path / "generator.pt"
    bad.write_text("not a model")
    assert main(["demo", "--video", str(data / VAL_CLIP), "--generator", str(bad), "--max-frames", "30",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "receiver failed (exit 2)" in err and "not a readable generator (not a PyTorch checkpoint)" in err
