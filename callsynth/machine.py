"""Which machine printed a timing: every figure callsynth prints or README quotes names it, since the
evaluating machine, and users' laptops, are slower or faster than the one that measured."""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_description() -> str:
    """E.g. "AMD EPYC at 2.4 GHz, 2 cores, AVX2, no AVX-512" (cores: what this process may use)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if mhz and "Hz" not in model:
        model += f" at {mhz / 1000:.1f} GHz"
    parts = [model or "unknown CPU", f"{cores} cores"]
    if flags:
        parts += ["AVX2" if "avx2" in flags else "no AVX2", "AVX-512" if "avx512f" in flags else "no AVX-512"]
    return ", ".join(parts)
