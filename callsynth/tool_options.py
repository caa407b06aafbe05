"""The offline tools' defaults, in one place, as the call's are in call_options: `fit-basis`, `eval`, `bench`,
`train-mouth`'s folder and the processes that track clips or make training samples. The command line and the
modules read them here (light: no numpy, no torch, since every `callsynth` command builds the whole parser)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolDefaults:
    # Processes that track clips or make training samples: the 2 cores of the machines this was made for.
    workers: int = 2

    # fit-basis: wire bits for the expression code, PCA components considered, GRID s1 clips read (of its
    # 1000: one speaker, who would otherwise be 95 % of the frames), frames kept of each clip.
    code_bits: int = 104
    max_components: int = 40
    max_grid_s1: int = 120
    frames_per_clip: int = 90

    # eval: whose clips (the validation people, whom no training or choice has seen), the codecs measured
    # beside callsynth and their target bitrates.
    people: str = "validation"
    codecs: tuple = ("x264", "vp8", "vp9", "av1")
    codec_kbps: tuple = (4, 8, 16, 32, 64)

    # bench: frames timed per renderer, and the still (under ../shared/data) when none is given.
    bench_frames: int = 60
    bench_identity: str = "video/pcavs/00067.mp4"

    # train-mouth: where the run writes its checkpoints, log and samples.
    mouth_out: str = "runs/mouth"

    # fit-interior: the codebook file it writes (--install also puts it where both ends of a call read it).
    interior_out: str = "runs/interior_codebook.npz"


TOOLS = ToolDefaults()
