"""The trained generator through the command line: reenact --model generator and combine (FIG. 7–9)."""

import numpy as np
import pytest

from callsynth.cli import main
from callsynth.media import iter_frames, read_still

from .conftest import VAL_CLIP

NEUTRAL, SMILING = "images/london_neutral/001_03.jpg", "images/london_smiling/002_08.jpg"


def test_reenact_with_the_generator_differs_from_the_warp_only_where_it_repairs(data, tmp_path):
    clip = data / VAL_CLIP
    outs = {}
    for model in ("warp", "generator"):
        outs[model] = tmp_path / f"{model}.mp4"
        assert main(["reenact", "--identity", str(clip), "--driving", str(clip), "--output",
                     str(outs[model]), "--max-frames", "12", "--model", model, "--quiet"]) == 0
    warp, gen = (np.stack(list(iter_frames(outs[m]))).astype(int) for m in ("warp", "generator"))
    assert warp.shape == gen.shape == (12, 256, 256, 3)
    diff = np.abs(warp - gen)
    assert 0.05 < diff.mean() < 8          # a repair, not a copy of the warp and not another picture


def test_combine_images_gives_one_face(data, tmp_path):
    out = tmp_path / "combined.png"
    assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(data / SMILING),
                 "--output", str(out)]) == 0
    image = read_still(out)
    assert image.shape == (256, 256, 3) and image.std() > 10


def _frame(path, index=0):
    return next(f for i, f in enumerate(iter_frames(path)) if i == index)


@pytest.mark.parametrize("model", ["generator", "warp"])
def test_combine_gives_the_face_of_a_in_the_picture_of_b(data, tmp_path, model):
    """Two validation people (never trained on): dlib's descriptor of the output (the evaluator's identity
    measure) is nearer A's than B's, and nearer A's than B's own is. Before the transfer,
    combine returned B's crop (cos to B ~1)."""
    import cv2

    from callsynth.eval.metrics import face_descriptor

    a_rgb, b_rgb = _frame(data / "video/hdtf/WDA_KatieHill_000.mp4"), _frame(data / "video/pcavs/620900105.mp4", 5)
    a, b, out = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out.png"
    cv2.imwrite(str(a), a_rgb[:, :, ::-1])
    cv2.imwrite(str(b), b_rgb[:, :, ::-1])
    assert main(["combine", "--identity", str(a), "--attribute", str(b), "--output", str(out),
                 "--model", model]) == 0
    made = read_still(out)
    d_out, d_a, d_b = (face_descriptor(x) for x in (made, a_rgb, b_rgb))
    assert d_out is not None
    assert d_out @ d_a > d_out @ d_b + 0.05
    assert d_out @ d_a > d_b @ d_a + 0.05                  # moved towards A, not merely away from B


def test_combine_takes_expression_and_pose_from_other_pictures(data, tmp_path):
    """C's expression (a video's: its change from C's first frame) and D's pose: B is first drawn at them,
    then A's face is set in; the output is a face (MediaPipe finds it) and differs from the combination
    with B's own expression and pose."""
    from callsynth.face.tracker import FaceTracker

    plain, moved = tmp_path / "plain.png", tmp_path / "moved.png"
    common = ["combine", "--identity", str(data / NEUTRAL), "--attribute", str(data / SMILING), "--model", "warp"]
    assert main(common + ["--output", str(plain)]) == 0
    assert main(common + ["--expression", str(data / VAL_CLIP),
                          "--attribute2", str(data / "video/pcavs/620900105.mp4"), "--output", str(moved)]) == 0
    a, b = read_still(plain), read_still(moved)
    with FaceTracker(video=False, smoothing=False) as tracker:
        assert tracker.process(b).found
    assert np.abs(a.astype(int) - b).mean() > 2


def test_combine_with_a_video_writes_an_image_as_asked_and_a_video_with_its_sound(data, tmp_path):
    """B a video: a .png output is the first combined frame (it once failed in libx264's image2 muxer);
    a .mp4 output has every frame of B and B's sound."""
    import av

    clip = data / VAL_CLIP
    image = tmp_path / "first.png"
    assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(clip),
                 "--output", str(image)]) == 0
    assert read_still(image).shape == (256, 256, 3)
    video = tmp_path / "all.mp4"
    assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(clip),
                 "--output", str(video)]) == 0
    with av.open(str(video)) as made, av.open(str(clip)) as source:
        kinds = {s.type for s in made.streams}
        frames = sum(1 for _ in made.decode(video=0))
        expected = sum(1 for _ in source.decode(video=0))
    assert kinds == {"video", "audio"} and frames == expected
    assert not list(tmp_path.glob("tmp*.mp4"))             # the silent intermediate is gone


def test_combine_writes_every_frame_of_a_video_whose_face_is_hidden_for_a_moment(data, tmp_path, caplog):
    """Frames of B without a face (a title card first, then a hand over it): B's picture as it is, where the
    face was, the rest combined and the count said. The first such frame ended the whole combine before,
    with nothing written. A video with no face in any frame is refused, and nothing is left behind."""
    from callsynth.media import VideoWriter

    hidden, none = tmp_path / "hidden.mp4", tmp_path / "none.mp4"
    frames = list(iter_frames(data / VAL_CLIP, max_frames=16))
    with VideoWriter(hidden, 25.0) as writer, VideoWriter(none, 25.0) as blank:
        for i, frame in enumerate(frames):
            writer.write(np.zeros_like(frame) if i < 2 or 6 <= i < 9 else frame)
            blank.write(np.full_like(frame, 90))
    out = tmp_path / "out.mp4"
    with caplog.at_level("WARNING", logger="callsynth.combine"):
        assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(hidden),
                     "--output", str(out), "--model", "warp"]) == 0
    made = list(iter_frames(out))
    assert len(made) == 16
    assert [i for i, f in enumerate(made) if f.mean() < 5] == [0, 1, 6, 7, 8]
    assert "no face in 5 of 16 frames (the first: frame 0)" in caplog.text
    still = tmp_path / "out.png"            # one picture of it: the first frame with a face (refused before)
    with caplog.at_level("WARNING", logger="callsynth.combine"):
        assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(hidden),
                     "--output", str(still), "--model", "warp"]) == 0
    assert read_still(still).mean() > 5 and "frame 2, the first with a face" in caplog.text
    assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(none),
                 "--output", str(tmp_path / "o.mp4"), "--model", "warp"]) == 2
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob("*.silent.mp4"))


def test_combine_holds_a_shorter_or_still_expression_source_to_the_end_of_b(data, tmp_path, caplog):
    """C shorter than B: its last expression holds to the end, as C padded with its last frame gives; C a
    still: its own expression throughout, as that still repeated as a video gives. Before, B's landmarks
    were coded against C's face after C's last frame (after the first, for a still): a face of neither."""
    import cv2

    from callsynth.media import VideoWriter

    c_frames = list(iter_frames(data / "video/pcavs/620900105.mp4", max_frames=4))
    short, padded, repeated = tmp_path / "short.mp4", tmp_path / "padded.mp4", tmp_path / "repeated.mp4"
    still = tmp_path / "c.png"
    cv2.imwrite(str(still), c_frames[-1][:, :, ::-1])
    with VideoWriter(short, 25.0) as a, VideoWriter(padded, 25.0) as b, VideoWriter(repeated, 25.0) as c:
        for i in range(10):
            if i < 4:
                a.write(c_frames[i])
            b.write(c_frames[min(i, 3)])
            c.write(read_still(still))
    b_clip = tmp_path / "b.mp4"
    with VideoWriter(b_clip, 25.0) as writer:
        for frame in iter_frames(data / VAL_CLIP, max_frames=10):
            writer.write(frame)
    made = {}
    for name, c in (("short", short), ("padded", padded), ("still", still), ("repeated", repeated)):
        made[name] = tmp_path / f"{name}-out.mp4"
        with caplog.at_level("WARNING", logger="callsynth.combine"):
            assert main(["combine", "--identity", str(data / NEUTRAL), "--attribute", str(b_clip),
                         "--expression", str(c), "--output", str(made[name]), "--model", "warp"]) == 0
    out = {k: np.stack(list(iter_frames(v))).astype(int) for k, v in made.items()}
    assert all(len(v) == 10 for v in out.values())
    # the same up to the sources' own encoding (about 1/255 a frame); B's landmarks coded against C's face,
    # as before, were about 9.5 apart on every frame after C's last
    for a, b in (("short", "padded"), ("still", "repeated")):
        assert np.abs(out[a] - out[b]).mean(axis=(1, 2, 3)).max() < 4, (a, b)
    assert "ended at frame 4 of 10" in caplog.text and "is a still" in caplog.text


def test_combine_refuses_a_picture_without_a_face(data, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert main(["combine", "--identity", str(blank), "--attribute", str(data / SMILING),
                 "--output", str(tmp_path / "o.png")]) == 2
    assert "no face" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["reenact", "combine"])
def test_a_damaged_generator_file_is_refused_clearly(data, tmp_path, capsys, command):
    bad = tmp_path / "g.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    args = (["reenact", "--identity", str(data / VAL_CLIP), "--driving", str(data / VAL_CLIP), "--output",
             str(tmp_path / "o.mp4"), "--model", "generator", "--quiet"] if command == "reenact" else
            ["combine", "--identity", str(data / NEUTRAL), "--attribute", str(data / SMILING),
             "--output", str(tmp_path / "o.png")])
    assert main(args + ["--generator", str(bad)]) == 2
    assert "g.pt" in capsys.readouterr().err


def test_bench_runs_from_anywhere_and_says_its_cpu_and_ratio(data, tmp_path):
    """`callsynth bench` from a folder where ../shared/data does not exist finds its still through
    CALLSYNTH_DATA (it once failed there), and prints the CPU and the generator's cost over the warp's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "callsynth.cli", "bench", "--frames", "3"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False,
                         env=dict(os.environ, CALLSYNTH_DATA=str(data), PYTHONPATH=str(repo)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cores" in run.stdout and "x the warp alone" in run.stdout
