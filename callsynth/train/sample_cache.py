"""Making training samples in worker processes, and keeping them on disk (outside the repository) under a
key of the settings that made them: what the generator's and the mouth generator's pairs share."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..cache import cache_root, save_npz
from ..stop_signals import leave_ctrl_c_to_the_parent


def cache_path(kind: str, key_parts: list) -> Path:
    key = hashlib.sha1(json.dumps(key_parts).encode()).hexdigest()[:16]
    return cache_root() / kind / f"{key}.npz"


def load_cached(cache: Path) -> dict | None:
    """The arrays cached at `cache`, or None when there are none yet."""
    if not cache.exists():
        return None
    with np.load(cache) as data:
        return {k: data[k] for k in data.files}


def save_cached(cache: Path, arrays: dict) -> None:
    """Write the arrays atomically (callsynth.cache.save_npz)."""
    save_npz(cache, **arrays)


def run_jobs(worker, jobs: list[tuple], workers: int, desc: str) -> dict:
    """{name: result} of `worker(job) -> (name, result)` over the jobs, in `workers` spawned processes."""
    results = {}
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(workers, initializer=leave_ctrl_c_to_the_parent) as pool:
            for name, res in tqdm(pool.imap_unordered(worker, jobs), total=len(jobs), desc=desc):
                results[name] = res
    else:
        for job in tqdm(jobs, desc=desc):
            name, res = worker(job)
            results[name] = res
    return results
