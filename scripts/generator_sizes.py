"""What the generator's architecture costs a frame at other sizes, before training one: the shipped shape and
smaller ones (resolution, widths, blocks), untrained weights (only the cost is measured), run as the receiver
runs it (FullFrame: 256² in, 256² out), TorchScript and eager, against the warp in the same run.

    python scripts/generator_sizes.py [--threads 2]

The target of the generator issue is warp + generator <= 2.5x the warp in one `callsynth bench` run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.face.basis import load_basis
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames
from callsynth.model.repairer import ID_DIM, POSE_DIM, CallGenerator, FullFrame
from callsynth.split import data_root
from receiver.renderer import Renderers

SHAPES = [  # (size, encoder widths, MC-AAD block widths)
    (128, [16, 32, 64, 128, 128], [128, 128, 64, 32, 16, 3]),     # shipped
    (64, [16, 32, 64, 128, 128], [128, 128, 64, 32, 16, 3]),
    (128, [8, 16, 32, 64, 64], [64, 64, 32, 16, 8, 3]),
    (64, [8, 16, 32, 64, 64], [64, 64, 32, 16, 8, 3]),
    (64, [8, 16, 32, 32], [32, 32, 16, 8, 3]),
    (32, [8, 16, 32, 64], [64, 32, 16, 8, 3]),
]


def _ms(fn, frames: int = 40) -> float:
    fn(0)
    fn(1)
    start = time.perf_counter()
    for i in range(frames):
        fn(i)
    return (time.perf_counter() - start) * 1000 / frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    basis = load_basis(None)
    still = prepare_still(next(iter(iter_frames(data_root() / "video/pcavs/00067.mp4"))), source="00067")
    warp = Renderers(basis, "warp")(still)
    rng = np.random.default_rng(0)
    states = [(warp.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(40)]
    warp_ms = _ms(lambda i: warp.render(states[i]))
    print(f"on {cpu_description()}, {args.threads} torch thread(s): warp {warp_ms:.2f} ms")
    for size, widths, blocks in SHAPES:
        net = CallGenerator(basis.k + 2, widths, blocks, size).eval()
        example = (torch.zeros(1, 3, 256, 256), torch.zeros(1, 1, size, size), torch.zeros(1, ID_DIM),
                   torch.zeros(1, basis.k + 2), torch.zeros(1, POSE_DIM))
        with torch.inference_mode():
            script = torch.jit.trace(FullFrame(net).eval(), example, check_trace=False)
            for _ in range(3):
                script(*example)
            scripted = _ms(lambda i: script(*example))
            eager_net = FullFrame(net).eval()
            eager = _ms(lambda i: eager_net(*example))
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{size:>3}², widths {widths}, blocks {blocks}: {params:.2f} M parameters, TorchScript "
              f"{scripted:.1f} ms, eager {eager:.1f} ms: warp + generator "
              f"{(warp_ms + min(scripted, eager)) / warp_ms:.2f}x "
              f"the warp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
