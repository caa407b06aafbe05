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
