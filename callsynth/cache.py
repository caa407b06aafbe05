"""Where derived data (tracked landmarks, training samples, phone labels) is kept: outside the repository,
under $CALLSYNTH_CACHE or ~/.cache/callsynth, keyed by what the file is so that a changed file is redone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CALLSYNTH_CACHE") or Path.home() / ".cache" / "callsynth")


def file_key(path: Path, version: int, *extra) -> str:
    """A key for what was derived from `path` (its place, size and time) by code of `version`."""
    st = path.stat()
    raw = f"{version}|{path.resolve()}|{st.st_size}|{int(st.st_mtime)}" + "".join(f"|{e}" for e in extra)
    return hashlib.sha1(raw.encode()).hexdigest()[:20]
