"""Rasterising a warped mesh into backward maps: for every output pixel, the point of the still it shows.

Compiled with numba (already installed with librosa): the warp runs on every frame on both sides of a
two-way call, and drawing its ~1100 triangles one OpenCV call at a time cost 2 ms of Python-level calls a
frame, the gather of per-pixel affines as much again. Here each triangle's pixels are found by edge
functions and mapped by its affine in one compiled loop, without the GIL (the renderer may run in a
worker thread). Triangles are drawn in the order given, later ones winning where they overlap (a turned
cheek behind the nose); two triangles sharing an edge compute its edge function from the same two
corners, with exactly opposite signs, so no pixel on it is missed."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _draw(tri_dst, affine, order, x0, y0, map_x, map_y):  # pragma: no cover - compiled
    h, w = map_x.shape
    for y in range(h):
        for x in range(w):
            map_x[y, x] = x0 + x
            map_y[y, x] = y0 + y
    for k in range(order.shape[0]):
        t = order[k]
        ax, ay = tri_dst[t, 0, 0], tri_dst[t, 0, 1]
        bx, by = tri_dst[t, 1, 0], tri_dst[t, 1, 1]
        cx, cy = tri_dst[t, 2, 0], tri_dst[t, 2, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        sign = 1.0 if area > 0 else -1.0
        lo_x = max(0, int(math.ceil(min(ax, bx, cx) - x0)))
        hi_x = min(w - 1, int(math.floor(max(ax, bx, cx) - x0)))
        lo_y = max(0, int(math.ceil(min(ay, by, cy) - y0)))
        hi_y = min(h - 1, int(math.floor(max(ay, by, cy) - y0)))
        a00, a10, a20 = affine[t, 0, 0], affine[t, 1, 0], affine[t, 2, 0]
        a01, a11, a21 = affine[t, 0, 1], affine[t, 1, 1], affine[t, 2, 1]
        for py in range(lo_y, hi_y + 1):
            yy = py + y0
            for px in range(lo_x, hi_x + 1):
                xx = px + x0
                if sign * ((bx - xx) * (cy - yy) - (by - yy) * (cx - xx)) < 0.0:
                    continue
                if sign * ((cx - xx) * (ay - yy) - (cy - yy) * (ax - xx)) < 0.0:
                    continue
                if sign * ((ax - xx) * (by - yy) - (ay - yy) * (bx - xx)) < 0.0:
                    continue
                map_x[py, px] = xx * a00 + yy * a10 + a20
                map_y[py, px] = xx * a01 + yy * a11 + a21


def backward_maps(tri_dst: np.ndarray, affine: np.ndarray, order: np.ndarray,
                  box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), float32, for the pixels of `box` (x0, y0, x1, y1; pixel centres at integer
    coordinates). `tri_dst` (T, 3, 2): the triangles in the output; `affine` (T, 3, 2): output → still,
    [x y 1] @ A; `order`: which triangles to draw, first to last. A pixel no triangle covers maps to
    itself."""
    x0, y0, x1, y1 = box
    map_x = np.empty((y1 - y0, x1 - x0), np.float32)
    map_y = np.empty_like(map_x)
    _draw(np.ascontiguousarray(tri_dst, np.float64), np.ascontiguousarray(affine, np.float64),
          np.ascontiguousarray(order, np.int64), float(x0), float(y0), map_x, map_y)
    return map_x, map_y


def warm_up() -> None:
    """Load the compiled kernel now (0.4 s on a 2-core EPYC even from numba's cache): at a call's first
    frame it held up the event loop, and the other side saw packets 0.4 s late."""
    backward_maps(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)), np.zeros(1, np.int64), (0, 0, 2, 2))
