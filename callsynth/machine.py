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


def share_cores() -> None:
    """For a call process, which shares the machine with the call's other work (the other side's process
    in a two-way call on one machine, the tracker, the renderer): OpenCV runs each operation on one thread,
    and numpy each matrix product (one_blas_thread). OpenCV's own thread pool split every remap and resize
    across all cores, and on two cores two call processes spent a tenth of their time in the kernel
    switching between those threads."""
    import sys

    import cv2

    cv2.setNumThreads(1)
    one_blas_thread()
    # The event loop (packets in and out, frames shown) shares the GIL with the tracker thread: hand it
    # over every millisecond rather than every 5, so a packet waits less for the thread that sends it.
    sys.setswitchinterval(0.001)


def one_blas_thread():
    """numpy's and scipy's matrix products on one thread (OpenBLAS, process-wide; usable as a `with` block
    that puts the threads back). A call process loads scipy's own OpenBLAS anyway (scipy.spatial: the warp's
    Delaunay, the pose's Rotation); it is imported here first so that the limit reaches it whichever module
    loads it. OpenBLAS splits every product across all cores, and a call's are small (the speech model's
    head, 256 × 3712 by one column a frame): with another process busy on both cores, its threads waited on
    each other and the speech model's compute per frame was 4.3-8.5 ms on two threads against 1.2-1.3 ms on
    one (the zero-padded numpy network of 2026-11-29, 2-core AMD EPYC; about the same either way on an idle
    machine)."""
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def freeze_heap() -> None:
    """Before a call streams: collect once, then move every object alive (the imported libraries: torch,
    MediaPipe, aiortc, ...) out of the garbage collector's reach. Its full collections walked them all
    and stopped every thread of a call process for 140-230 ms (measured on a 2-core EPYC), once or twice
    in a few seconds: the other side saw a burst of packets half a second late."""
    import gc

    gc.collect()
    gc.freeze()
