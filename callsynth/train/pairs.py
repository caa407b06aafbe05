"""Training samples made by the call's own path: for a clip, the still is its first frame, and every
sampled frame t gives (the still warped to the landmarks the receiver would rebuild for t, frame t's
crop as ground truth, the code and pose that were sent). Images are kept at the crop's full size (256²),
where the evaluator judges; the landmark map and chip transform at the generator's size. Cached on disk,
outside the repository."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..face.basis import ExpressionBasis, load_basis
from ..face.code import FaceCoder
from ..face.still import NoFaceError, prepare_still
from ..face.warp import FaceWarper
from ..media import MediaError, iter_frames, read_still, video_info
from ..model.chip import chip_theta
from ..model.runtime import landmark_map, pose_vector
from ..split import portrait_pairs, training_files
from ..tool_options import TOOLS
from ..wire import Codec
from .sample_cache import cache_path, load_cached, run_jobs, save_cached

PAIRS_FORMAT = 2  # 2: gt and warp at the crop's full size
SAMPLE_KEYS = ("gt", "warp", "lmap", "code", "pose", "theta", "clip")


def frame_samples(still, frames, fps: float, basis: ExpressionBasis, size: int, every: int = 1) -> dict:
    """Every `every`-th of `frames` (with a face) as the receiver would rebuild it from `still`."""
    from sender.features import FeatureEncoder

    encoder = FeatureEncoder(basis, still, fps=fps, send_every=1, references=False)
    codec, coder, warper = Codec(basis), FaceCoder(basis, still.landmarks), FaceWarper(still.image, still.landmarks)
    scale = size / still.image.shape[0]
    out = {k: [] for k in SAMPLE_KEYS}
    try:
        for i, frame in enumerate(frames):
            sent = encoder.process(frame, int(i * 1000 / fps))
            if i % every or not sent.found:
                continue
            features = codec.decode(sent.packet)
            target = coder.landmarks(features.pose, features.code)     # as the receiver's warp does
            warped = warper.warp(target)
            out["gt"].append(sent.crop)
            out["warp"].append(warped)
            out["lmap"].append(landmark_map(target, size, scale))
            out["code"].append(features.code.astype(np.float32))
            out["pose"].append(pose_vector(features.pose))
            out["theta"].append(chip_theta(target * scale, size))
    finally:
        encoder.close()
    return {"samples": out, "still": cv2.resize(still.image, (size, size), interpolation=cv2.INTER_AREA),
            "still_theta": chip_theta(still.landmarks * scale, size)}


def clip_samples(path: Path, basis: ExpressionBasis, size: int, frames_per_clip: int, every: int) -> dict:
    """A clip's frames rebuilt from its first frame, as in a call."""
    frames = list(iter_frames(path, frames_per_clip))
    still = prepare_still(frames[0], source=f"{path.name} first frame")
    return frame_samples(still, frames, video_info(path).fps, basis, size, every)


def portrait_samples(still_path: Path, target_path: Path, basis: ExpressionBasis, size: int) -> dict:
    """One sample: a person's other studio portrait (neutral ↔ smiling) rebuilt from this one — a
    change of expression with its true picture, teeth included, on a face no clip shows."""
    still = prepare_still(read_still(still_path), source=str(still_path))
    return frame_samples(still, [read_still(target_path)], 30.0, basis, size)


def _worker(job):
    """job: (name, still or clip path, target path or None, size, frames_per_clip, every)."""
    name, path, target, size, frames_per_clip, every = job
    try:
        if target is None:
            return name, clip_samples(Path(path), load_basis(), size, frames_per_clip, every)
        return name, portrait_samples(Path(path), Path(target), load_basis(), size)
    except (MediaError, NoFaceError) as exc:
        return name, exc


def choose_clips(grid_s1: int, other: int, seed: int) -> list[Path]:
    files = training_files("video")
    rng = np.random.default_rng(seed)
    s1 = [f for f in files if f.parent.name == "grid_s1"]
    rest = [f for f in files if f.parent.name != "grid_s1"]
    pick = lambda xs, n: [xs[i] for i in sorted(rng.permutation(len(xs))[:n])]  # noqa: E731
    return pick(s1, grid_s1) + pick(rest, other)


def build_pairs(config, basis: ExpressionBasis, workers: int = TOOLS.workers, clips: list[Path] | None = None) -> dict:
    """All samples of the configured training clips (or of `clips`), as arrays; cached by the settings
    that make them."""
    clips = choose_clips(config.grid_s1_clips, config.other_clips, config.seed) if clips is None else clips
    jobs = [(str(c), str(c), None, config.size, config.frames_per_clip, config.frame_every) for c in clips]
    return _build(jobs, [PAIRS_FORMAT, basis.name, config.size, config.frames_per_clip, config.frame_every,
                         [str(c) for c in clips]], workers, "training pairs")


def build_portrait_pairs(config, basis: ExpressionBasis, workers: int = TOOLS.workers) -> dict:
    """Both directions (neutral → smiling, smiling → neutral) of the first `config.portrait_people`
    people of the London set, as arrays; cached."""
    people = portrait_pairs()[: config.portrait_people]
    jobs = [(f"{a} -> {b}", str(a), str(b), config.size, 1, 1) for pair in people for a, b in (pair, pair[::-1])]
    return _build(jobs, [PAIRS_FORMAT, "portraits", basis.name, config.size, [j[0] for j in jobs]], workers,
                  "portrait pairs")


def merge_pairs(clips: dict, portraits: dict) -> dict:
    """One set of arrays: the clips' samples, then the portraits' (their clip indices shifted), with
    `portrait` marking which samples are portraits."""
    merged = {k: np.concatenate([clips[k], portraits[k]]) for k in SAMPLE_KEYS[:-1]}
    merged["clip"] = np.concatenate([clips["clip"], portraits["clip"] + len(clips["stills"])])
    for k in ("stills", "still_thetas", "names"):
        merged[k] = np.concatenate([clips[k], portraits[k]])
    merged["portrait"] = np.r_[np.zeros(len(clips["gt"]), bool), np.ones(len(portraits["gt"]), bool)]
    return merged


def _build(jobs: list[tuple], key_parts: list, workers: int, desc: str) -> dict:
    """Run the jobs (in `workers` processes), stack their samples, cache the arrays by `key_parts`."""
    cache = cache_path("pairs", key_parts)
    arrays = load_cached(cache)
    if arrays is not None:
        print(f"{desc}: {len(arrays['gt'])} samples of {len(arrays['stills'])} stills, from {cache}")
        return arrays
    results = run_jobs(_worker, jobs, workers, desc)
    merged = {k: [] for k in SAMPLE_KEYS}
    stills, still_thetas, names = [], [], []
    for name in [job[0] for job in jobs]:
        res = results.get(name)
        if res is None or isinstance(res, Exception) or not res["samples"]["gt"]:
            continue
        index = len(stills)
        stills.append(res["still"])
        still_thetas.append(res["still_theta"])
        names.append(name)
        for k in SAMPLE_KEYS[:-1]:
            merged[k] += res["samples"][k]
        merged["clip"] += [index] * len(res["samples"]["gt"])
    if not stills:
        raise ValueError(f"{desc}: no usable samples")
    arrays = {k: np.stack(v) for k, v in merged.items()}
    arrays.update(stills=np.stack(stills), still_thetas=np.stack(still_thetas), names=np.array(names))
    save_cached(cache, arrays)
    print(f"{desc}: {len(arrays['gt'])} samples of {len(stills)} stills, cached in {cache}")
    return arrays
