"""How much of the full-frame generator's SSIM gain survives when it repairs the *still* instead of every
frame: every Nth frame the generator repairs the frame as usual, its repair is carried back to the still's
own pixels through the exact inverse of that frame's warp (each output pixel's repair splatted, bilinearly,
onto the still pixels it was sampled from), and the frames between are the warp of that repaired still —
they cost the warp alone. A measurement for the generator issue's speed target, not the call's renderer.

    python scripts/still_repair.py [--every 8] [CLIP ...]     (default: callsynth eval's seven clips)

Prints, per clip, the SSIM gain over the warp (callsynth eval's SSIM, every frame, one packet every 2
frames) of the per-frame generator, of the round trip on the frame itself (repair → still → frame), and of
the repaired still every N frames (all frames, and the frames between alone), with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.eval.metrics import ssim
from callsynth.face.basis import load_basis
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import iter_frames, video_info
from callsynth.reenact import ReenactStats, reenact
from callsynth.split import eval_clips
from receiver.generator_renderer import GeneratorRenderer
from receiver.renderer import Renderers


def splat_back(repair: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, shape) -> np.ndarray:
    """`repair` (H, W, 3) of a frame warped with backward maps (map_x, map_y) into the still: each output
    pixel's repair added, with bilinear weights, where its sample came from; averaged; 0 where none came."""
    h, w = shape
    acc, weight = np.zeros((h * w, 3), np.float32), np.zeros(h * w, np.float32)
    x, y, r = map_x.ravel(), map_y.ravel(), repair.reshape(-1, 3)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (wt > 0)
        index, wk = yi[ok] * w + xi[ok], wt[ok]
        for c in range(3):
            acc[:, c] += np.bincount(index, r[ok, c] * wk, minlength=h * w)
        weight += np.bincount(index, wk, minlength=h * w)
    out = np.where(weight[:, None] > 1e-3, acc / np.maximum(weight, 1e-3)[:, None], 0.0)
    return out.reshape(h, w, 3).astype(np.float32)


SPLAT_MS: list[float] = []      # what each splat cost


class StillRepairer:
    """A GeneratorRenderer whose generator runs on every `every`-th frame; the frames between warp the still
    it last repaired. `same_frame`: the generator's frames too are the repaired still's warp (the round
    trip alone). Everything else is the wrapped renderer's."""

    def __init__(self, inner: GeneratorRenderer, every: int, same_frame: bool):
        self.inner, self.every, self.same_frame = inner, every, same_frame
        self.plain, self.count = inner.warper.still.copy(), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render(self, state, repair=True):
        inner = self.inner
        if state is None or not repair:
            return inner.render(state, repair)
        pose, code = state
        target = inner.target_landmarks(pose, code)
        self.count += 1
        if (self.count - 1) % self.every:
            return inner.compose(target)
        inner.warper.still = self.plain
        composed = inner.compose(target)
        out = inner.repair(composed, target, code, pose)
        maps = inner.warper.maps(target)
        started = time.perf_counter()
        back = splat_back(out.astype(np.float32) - composed.astype(np.float32), *maps, self.plain.shape[:2])
        SPLAT_MS.append((time.perf_counter() - started) * 1000)
        inner.warper.still = np.clip(self.plain.astype(np.float32) + back + 0.5, 0, 255).astype(np.uint8)
        return inner.compose(target) if self.same_frame else out


class StillRenderers(Renderers):
    """Renderers whose renderers are StillRepairers."""

    def __init__(self, basis, every: int, same_frame: bool = False):
        super().__init__(basis, "generator")
        self.every, self.same_frame = every, same_frame

    def __call__(self, still):
        return StillRepairer(super().__call__(still), self.every, self.same_frame)


def ssims(still, frames, fps, basis, renderers=None) -> np.ndarray:
    """Per frame SSIM of the rebuilt crop against the real one (one packet every 2 frames)."""
    pairs = reenact(still, frames, fps, basis, send_every=2, stats=ReenactStats(fps, 2), renderers=renderers)
    return np.array([ssim(r, o) for r, o in pairs])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("clips", type=Path, nargs="*")
    args = ap.parse_args(argv)
    basis = load_basis(None)
    print(f"on {cpu_description()}; repaired still every {args.every} frames")
    for path in args.clips or eval_clips():
        fps = video_info(path).fps
        frames = list(iter_frames(path))
        still = prepare_still(frames[0], source=f"{path.name} first frame")

        clip = (still, frames, fps, basis)
        warp = ssims(*clip)
        full = ssims(*clip, Renderers(basis, "generator")).mean() - warp.mean()
        round_trip = ssims(*clip, StillRenderers(basis, 1, same_frame=True)).mean() - warp.mean()
        amortised = ssims(*clip, StillRenderers(basis, args.every)) - warp
        between = np.arange(len(warp)) % args.every != 0
        print(f"{path.name}: SSIM gain over the warp ({warp.mean():.5f}): per-frame generator {full:+.5f}, round "
              f"trip {round_trip:+.5f}, repaired still {amortised.mean():+.5f} (frames between "
              f"{amortised[between].mean():+.5f})", flush=True)
    print(f"the splat: {np.mean(SPLAT_MS):.1f} ms on average over {len(SPLAT_MS)} frames (numpy, one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
