"""Where derived data (tracked landmarks, training samples, phone labels) is kept: outside the repository,
under $CALLSYNTH_CACHE or ~/.cache/callsynth, keyed by what the file holds so that a changed file is redone
and a copied or touched one is not (the shared data is copied afresh, with new times, for every session)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    return Path(os.environ.get("CALLSYNTH_CACHE") or Path.home() / ".cache" / "callsynth")


_content_keys: dict[tuple, str] = {}


def content_key(path: Path) -> str:
    """SHA-1 of the file's bytes (remembered per place, size and time within a process)."""
    st = path.stat()
    seen = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if seen not in _content_keys:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _content_keys[seen] = digest.hexdigest()
    return _content_keys[seen]


def file_key(path: Path, version: int, *extra) -> str:
    """A key for what code of `version` derived from the bytes of `path` (not its place or time)."""
    raw = f"{version}|{content_key(Path(path))}" + "".join(f"|{e}" for e in extra)
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def save_npz(target: Path, compressed: bool = False, **arrays) -> None:
    """Write the arrays atomically: a run stopped half way leaves no damaged file, and two processes
    deriving the same file at once (two workers, two commands) each write their own temporary file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.npz")
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    tmp.replace(target)
