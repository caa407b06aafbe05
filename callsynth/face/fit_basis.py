"""`callsynth fit-basis`: mean face, rigid points, PCA expression basis and wire ranges from training data.

Only the identity split's training files are read (callsynth/split.py). Steps:
1. track every training clip (cached) and the studio portraits;
2. generalised Procrustes for the mean face shape;
3. rigid points: those that move least relative to the head within a clip;
4. pose-free offsets of each frame from its clip's first frame (and smiling from neutral portraits);
5. uncentred PCA of the offsets, quantisation ranges, and a greedy bit allocation for the wire.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..split import data_root, training_files
from ..tool_options import TOOLS
from .basis import ExpressionBasis
from .crop import CROP_SIZE
from .landmark_cache import track_many
from .pose import estimate_pose, umeyama

NUM_IRIS = 10
POSE_BITS = np.array([10, 10, 10, 10, 10, 9])


def _normalise(shape: np.ndarray) -> np.ndarray:
    shape = shape - shape.mean(0)
    return shape / np.sqrt((shape ** 2).sum(1).mean())


def generalised_procrustes(shapes: np.ndarray, idx: np.ndarray, iterations: int = 5) -> np.ndarray:
    mean = _normalise(shapes[0])
    for _ in range(iterations):
        aligned = []
        for s in shapes:
            sc, rot, tr = umeyama(s[idx], mean[idx])
            aligned.append(sc * s @ rot.T + tr)
        mean = _normalise(np.mean(aligned, 0))
    return mean


def allocate_bits(variances: np.ndarray, ranges: np.ndarray, budget: int, min_bits: int = 3,
                  max_bits: int = 10) -> np.ndarray:
    """Greedy reverse water-filling: each bit goes where it lowers expected squared error most."""
    bits = np.zeros(len(variances), dtype=np.int64)

    def distortion(k, b):
        if b == 0:
            return variances[k]
        step = ranges[k] / ((1 << b) - 1)
        return min(variances[k], step ** 2 / 12)

    used = 0
    while True:
        best, best_gain, best_cost = -1, 0.0, 0
        for k in range(len(variances)):
            b = bits[k]
            if b >= max_bits:
                continue
            cost = min_bits if b == 0 else 1
            if used + cost > budget:
                continue
            gain = (distortion(k, b) - distortion(k, b + cost)) / cost
            if gain > best_gain:
                best, best_gain, best_cost = k, gain, cost
        if best < 0:
            return bits
        bits[best] += best_cost
        used += best_cost


def _clips(max_grid_s1: int):
    videos = training_files("video")
    grid = [p for p in videos if "grid_s1" in str(p)]
    other = [p for p in videos if "grid_s1" not in str(p)]
    step = max(1, len(grid) // max(1, max_grid_s1))
    return other + grid[::step][:max_grid_s1]


def fit_basis(out_dir: str | Path, code_bits: int = TOOLS.code_bits, max_components: int = TOOLS.max_components,
              max_grid_s1: int = TOOLS.max_grid_s1, frames_per_clip: int = TOOLS.frames_per_clip,
              workers: int = TOOLS.workers,
              rigid_fraction: float = 0.3) -> ExpressionBasis:
    root = data_root()
    clips = _clips(max_grid_s1)
    images = training_files("image")
    tracks = track_many(clips, max_frames=None, workers=workers, desc="tracking clips")
    stills = track_many(images, workers=workers, desc="tracking portraits")
    # Landmarks in normalised crop units, per clip, valid frames only, at most frames_per_clip.
    seqs = []
    for path in sorted(tracks):
        lm = tracks[path]["landmarks"]
        ok = ~np.isnan(lm).any(axis=(1, 2))
        lm = lm[ok] / CROP_SIZE
        if len(lm) >= 2:
            stride = max(1, len(lm) // frames_per_clip)
            seqs.append(lm[::stride].astype(np.float64))
    portraits = {Path(p).relative_to(root).as_posix(): r["landmarks"][0] / CROP_SIZE
                 for p, r in stills.items() if not np.isnan(r["landmarks"][0]).any()}
    print(f"fit-basis: {len(seqs)} clips, {sum(map(len, seqs))} frames, {len(portraits)} portraits")

    face_idx = np.arange(478 - NUM_IRIS)
    sample = np.concatenate([s[:: max(1, len(s) // 5)] for s in seqs] + [np.stack(list(portraits.values()))])
    mean = generalised_procrustes(sample, face_idx)

    # Rigid points: smallest within-clip motion after a pose fit on all face points.
    motion = np.zeros(478)
    for s in seqs:
        canon = np.stack([estimate_pose(f, mean, face_idx).to_canonical(f) for f in s])
        motion += np.linalg.norm(canon - canon.mean(0), axis=2).mean(0)
    motion[478 - NUM_IRIS:] = np.inf
    rigid_idx = np.sort(np.argsort(motion)[: int(rigid_fraction * 478)])
    mean = generalised_procrustes(sample, rigid_idx)

    offsets, poses = [], []
    for s in seqs:
        fitted = [estimate_pose(f, mean, rigid_idx) for f in s]
        canon = np.stack([p.to_canonical(f) for p, f in zip(fitted, s)])
        offsets.append(canon[1:] - canon[0])
        poses += [p.vector() for p in fitted]
    for name, neutral in portraits.items():
        smiling = portraits.get(name.replace("london_neutral", "london_smiling"))
        if "london_neutral" in name and smiling is not None:
            pn, ps = estimate_pose(neutral, mean, rigid_idx), estimate_pose(smiling, mean, rigid_idx)
            offsets.append((ps.to_canonical(smiling) - pn.to_canonical(neutral))[None])
    offsets = np.concatenate(offsets).reshape(-1, 478 * 3)
    poses = np.array(poses)

    _, sing, vt = np.linalg.svd(offsets, full_matrices=False)
    components = vt[:max_components]
    codes = offsets @ components.T
    variances = (codes ** 2).mean(0)
    lo, hi = np.percentile(codes, 0.05, axis=0), np.percentile(codes, 99.95, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    bits = allocate_bits(variances, hi - lo, code_bits)
    keep = bits > 0
    explained = float((sing[: max_components][keep] ** 2).sum() / (sing ** 2).sum())

    # Rotations beyond about 65 degrees are past what the face mesh tracks; a few glitches must not
    # stretch the range (and coarsen the step) for everyone.
    rot_lim = float(np.clip(1.3 * np.percentile(np.abs(poses[:, :3]), 99.9), 0.6, 1.15))
    lsc_lo, lsc_hi = np.percentile(poses[:, 5], [0.1, 99.9])
    pose_lo = np.array([-rot_lim] * 3 + [0.0, 0.0, lsc_lo - 0.35])
    pose_hi = np.array([rot_lim] * 3 + [1.0, 1.0, lsc_hi + 0.35])

    used = sorted(Path(p).relative_to(root).as_posix() for p in list(tracks) + list(stills))
    meta = {
        "data_sha256": hashlib.sha256("\n".join(used).encode()).hexdigest(),
        "files": len(used),
        "offset_samples": int(len(offsets)),
        "explained_variance": round(explained, 4),
        "code_bits": int(bits[keep].sum()),
        "pose_bits": int(POSE_BITS.sum()),
        "command": f"callsynth fit-basis --code-bits {code_bits} --max-components {max_components}",
    }
    basis = ExpressionBasis(
        mean_shape=mean.astype(np.float64), rigid_idx=rigid_idx.astype(np.int64),
        components=components[keep].astype(np.float64), code_lo=lo[keep], code_hi=hi[keep],
        code_bits=bits[keep], pose_lo=pose_lo, pose_hi=pose_hi, pose_bits=POSE_BITS.copy(), meta=meta)
    path = basis.save(out_dir)
    print(f"fit-basis: K={basis.k} components, {meta['code_bits']} code bits, explained variance "
          f"{explained:.3f}; wrote {path}")
    return basis
