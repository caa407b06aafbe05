"""Tracked landmarks of whole clips, in stable-crop pixels, cached on disk outside the repository.

Fitting the basis (and, later, training) reads thousands of frames; tracking them once is enough.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..cache import cache_root, file_key, save_npz
from ..media import MediaError, iter_frames, video_info
from ..stop_signals import leave_ctrl_c_to_the_parent
from ..tool_options import TOOLS
from .crop import StableCrop
from .tracker import NUM_LANDMARKS, FaceTracker

CACHE_VERSION = 2


def cache_dir() -> Path:
    return cache_root() / "landmarks"


def _key(path: Path, max_frames: int | None) -> str:
    return file_key(path, CACHE_VERSION, max_frames)


def cached(path: str | Path, max_frames: int | None = None) -> dict | None:
    """The cached tracking of a file, or None."""
    target = cache_dir() / f"{_key(Path(path), max_frames)}.npz"
    if not target.exists():
        return None
    with np.load(target) as data:
        return {"landmarks": data["landmarks"], "fps": float(data["fps"])}


def track_file(path: str | Path, max_frames: int | None = None) -> dict:
    """{'landmarks': (T, 478, 3) crop pixels, NaN where no face; 'fps': float}."""
    path = Path(path)
    target = cache_dir() / f"{_key(path, max_frames)}.npz"
    hit = cached(path, max_frames)
    if hit is not None:
        return hit
    is_image = path.suffix.lower() in {".jpg", ".jpeg", ".png"}
    fps = 25.0 if is_image else video_info(path).fps
    crop = StableCrop()
    out = []
    with FaceTracker(video=not is_image, smoothing=False, fps=fps) as tracker:
        for frame in iter_frames(path, max_frames):
            result = tracker.process(frame)
            box = crop.update(result.landmarks, frame.shape)
            if result.found:
                out.append(box.to_crop(result.landmarks).astype(np.float32))
            else:
                out.append(np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
    landmarks = np.stack(out)
    save_npz(target, compressed=True, landmarks=landmarks, fps=fps)
    return {"landmarks": landmarks, "fps": fps}


def _worker(args):
    path, max_frames = args
    try:
        return str(path), track_file(path, max_frames)
    except MediaError as exc:
        return str(path), exc


def track_many(paths, max_frames: int | None = None, workers: int = TOOLS.workers, desc: str = "tracking"):
    """Track many files in parallel processes, with a progress bar; unreadable files are reported."""
    results, failed = {}, {}
    jobs = []
    for p in paths:
        hit = cached(p, max_frames) if Path(p).exists() else None
        if hit is not None:
            results[str(p)] = hit
        else:
            jobs.append((Path(p), max_frames))
    if not jobs:
        return results
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=leave_ctrl_c_to_the_parent) as pool:
        for path, res in tqdm(pool.imap_unordered(_worker, jobs), total=len(jobs), desc=desc):
            (failed if isinstance(res, Exception) else results)[path] = res
    for path, exc in failed.items():
        print(f"skipped {path}: {exc}")
    return results
