"""Warp the still to target landmarks: piecewise affine over a triangulation of the face mesh, extended
by rings of control points around the face so that hair, ears and neck follow the head, and by fixed
points on the crop border so that the background stays where it is instead of tearing.

No triangle may fold over. When the target turns the head or stretches an expression far enough that a
triangle's corners cross (the cheek contour passing the ring outside it in three-quarter view, a still
of one person driven by another's motion), rasterising it would paint a mirrored sliver of the still —
the sawtooth and the streaks into the hair. `unfold` moves each folded triangle as one piece (its
corners take their mean displacement) until every triangle keeps its orientation; the crop border
never moves.

Unfolded is not yet smooth. The still's hair or background edge often lies inside the outline's thin
triangles (hair over a cheek, a jaw against a dark background); when the head turns, each of them stretches
it its own way, and the edge came out as a sawtooth along the cheek and jaw. So points between the outline
and the first ring carry the outline's motion into the ring's linearly (`BAND`), and, as far as the outline
bends other than as a similarity (`outline_bend`), the maps are smoothed along it (`smooth_outline`).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..compiled import compiled
from .crop import CROP_SIZE
from .pose import umeyama
from .raster import backward_maps

# Face-oval indices of the MediaPipe mesh (FACEMESH_FACE_OVAL, in order around the face).
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
                      400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
                      54, 103, 67, 109])
# Rings of extra control points: (distance from the face centre in face radii, how much they follow
# the head's similarity motion; the crop border follows with 0). Letting the rings also follow the face
# outline's own motion (a smoother falloff into hair and neck) was tried: SSIM and landmark NME were
# worse on the validation clips, so the rings stay rigid.
RINGS = ((1.3, 1.0), (1.75, 0.6))
# Between the face outline and the first ring, a piecewise-affine warp shears each thin triangle its own
# way when the outline moves against the ring (a head turning away): a hair or background edge that
# crosses the band came out as a sawtooth. Points on these radii (face radii, as RINGS) carry the motion
# from the outline's to the ring's linearly with the distance, so the band bends smoothly instead.
BAND = (1.1, 1.2)
BORDER_STEPS = 8
UNFOLD_STEPS = 40
OUTLINE_BAND = 0.08      # face widths each side of the outline where the maps are smoothed
OUTLINE_SIGMA = 0.035    # face widths: the blur of the maps there
BEND_FROM, BEND_FULL = 0.02, 0.1   # outline_bend from which the smoothing starts, and is full


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (positive counter-clockwise in image axes)."""
    p = points[triangles]                                  # (T, 3, 2)
    ab, ac = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]


def folded(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Mask of triangles whose orientation in dst is the opposite of theirs in src (they fold over)."""
    return _orientation(src, triangles) * signed_areas(dst, triangles) < 0


def _orientation(src: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    return np.sign(signed_areas(src, triangles))


def unfold(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, movable: np.ndarray,
           steps: int = UNFOLD_STEPS, sign: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """dst with no folded triangle, changed as little as it takes; and how many were folded at first.

    `movable`: which points may move (the crop border may not). Each step gives every folded triangle
    one displacement, the mean of its corners' (a translation keeps a triangle's orientation); a corner
    shared by several folded triangles takes the mean of theirs. On the validation clips one or two
    steps resolve almost every frame. If folds survive every step, the movable displacements shrink
    toward zero, where nothing is folded, until none is. `sign`: the triangles' orientation in src, when
    the caller has it."""
    sign = _orientation(src, triangles) if sign is None else sign
    bad = sign * signed_areas(dst, triangles) < 0
    first = int(bad.sum())
    if not first:
        return dst, 0
    d = dst - src
    n = len(src)
    for _ in range(steps):
        corners = triangles[bad]
        share = np.repeat(d[corners].mean(1), 3, axis=0)
        total, count = np.zeros_like(d), np.zeros(n)
        np.add.at(total, corners.ravel(), share)
        np.add.at(count, corners.ravel(), 1)
        take = (count > 0) & movable
        d[take] = total[take] / count[take, None]
        bad = sign * signed_areas(src + d, triangles) < 0
        if not bad.any():
            return src + d, first
    shrink, trial = 1.0, d
    while bad.any() and shrink > 1e-3:
        shrink *= 0.7
        trial = d.copy()
        trial[movable] *= shrink
        bad = sign * signed_areas(src + trial, triangles) < 0
    return src + (trial if not bad.any() else np.where(movable[:, None], 0.0, d)), first


def outline_bend(still_outline: np.ndarray, outline: np.ndarray, head: np.ndarray | None = None) -> float:
    """How far the face outline moved other than as one similarity (a turn, a jaw dropping), at its worst
    point, in face widths: under 0.02 on a GRID speaker facing the camera, 0.15 at a three-quarter turn.
    `head`: that similarity (2x3), when the caller has already fitted it."""
    head = _similarity_2d(still_outline, outline) if head is None else head
    rigid = still_outline @ head[:, :2].T + head[:, 2]
    return float(np.linalg.norm(outline - rigid, axis=1).max() / max(np.ptp(outline[:, 0]), 1e-6))


def smooth_outline(map_x: np.ndarray, map_y: np.ndarray, outline: np.ndarray, strength: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The backward maps made smooth in a band along the face outline (OUTLINE_BAND of the face's width
    each side, blurred by OUTLINE_SIGMA of it; `strength` in [0, 1] of the way). There the still's hair
    or background edge often lies inside the outline's triangles; as the head turns each of them
    stretches it its own way, and the edge came out as a sawtooth along the cheek and jaw. Averaged maps
    bend it smoothly; the eyes, nose and mouth are far from the band and stay sharp."""
    width = float(np.ptp(outline[:, 0]))
    if width < 8 or strength <= 0:
        return map_x, map_y
    sigma = OUTLINE_SIGMA * width
    half = OUTLINE_BAND * width
    margin = int(np.ceil(half + 3 * sigma))
    h, w = map_x.shape
    x0, y0 = (max(0, int(v) - margin) for v in outline.min(0))
    x1, y1 = (int(v) + margin + 1 for v in outline.max(0))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return map_x, map_y
    # only the box around the outline, both maps in one two-channel blur (0.7 ms instead of 1 at 256²;
    # two box blurs of the same variance cost less but gave landmark NME +0.008 on the validation clips)
    band = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(band, [np.round((outline - (x0, y0)) * 16).astype(np.int32)], True, 255,
                  max(1, int(round(2 * half))), cv2.LINE_AA, 4)
    weight = cv2.GaussianBlur(band.astype(np.float32) * (min(strength, 1.0) / 255), (0, 0), sigma / 2)
    maps = np.dstack([map_x[y0:y1, x0:x1], map_y[y0:y1, x0:x1]])
    maps += weight[..., None] * (cv2.GaussianBlur(maps, (0, 0), sigma) - maps)
    map_x, map_y = map_x.copy(), map_y.copy()
    map_x[y0:y1, x0:x1], map_y[y0:y1, x0:x1] = maps[..., 0], maps[..., 1]
    return map_x, map_y


def _affines(tri_dst: np.ndarray, tri_src: np.ndarray) -> np.ndarray:
    """Affine per triangle, target -> source: [x y 1] @ A = [u v], in closed form (the inverse of each
    3x3 [x y 1] matrix by its adjugate; a pseudo-inverse per triangle was the warp's costliest step). A
    triangle of no area (it paints at most a line) gets the translation of its corners."""
    x, y = tri_dst[..., 0], tri_dst[..., 1]
    x0, x1, x2, y0, y1, y2 = x[:, 0], x[:, 1], x[:, 2], y[:, 0], y[:, 1], y[:, 2]
    adj = np.stack([np.stack([y1 - y2, y2 - y0, y0 - y1], 1),
                    np.stack([x2 - x1, x0 - x2, x1 - x0], 1),
                    np.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], 1)], 1)
    det = x0 * (y1 - y2) + x1 * (y2 - y0) + x2 * (y0 - y1)
    flat = np.abs(det) < 1e-9
    affine = (adj / np.where(flat, 1.0, det)[:, None, None]) @ tri_src
    if flat.any():
        shift = (tri_src[flat] - tri_dst[flat]).mean(1)
        affine[flat] = np.concatenate([np.broadcast_to(np.eye(2), (int(flat.sum()), 2, 2)),
                                       shift[:, None, :]], axis=1)
    return affine


def _similarity_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity from src to dst points."""
    s, r, t = umeyama(src, dst)
    return np.hstack([s * r, t[:, None]])


def remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`image` sampled through backward maps (FaceWarper.maps): the warp's one sampling rule."""
    return cv2.remap(image, maps[0], maps[1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def splat_back(change: np.ndarray, maps: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A change (H, W, C) to a picture warped through backward `maps`, carried back onto the source's pixels
    (`shape`): each output pixel's change spread, with the same bilinear weights its sample was read with,
    over the four source pixels it came from, and averaged there; 0 where no output pixel read. The exact
    inverse of that warp where it is one to one — a second piecewise-affine warp the other way is not: it
    cost a validation face the generator's gain (README "When the machine is slow"). Compiled (numba): as
    sixteen numpy bincounts it took 12-15 ms at 256², now 1.4-2.2 ms, the same sums bit for bit (2-core AMD
    EPYC at 2.6 GHz, a /tmp probe)."""
    h, w = shape
    channels = change.shape[2]
    out = np.zeros((h, w, channels), np.float32)
    _splat(np.ascontiguousarray(change, np.float32).reshape(-1, channels),
           np.ascontiguousarray(maps[0], np.float32).ravel(), np.ascontiguousarray(maps[1], np.float32).ravel(),
           np.zeros((h, w, channels)), np.zeros((h, w)), out)
    return out


@compiled
def _splat(values, xs, ys, acc, total, out):
    """splat_back's sums: each sample's value times its four bilinear weights into `acc`, the weights into
    `total` (source pixels outside the picture, and zero weights, left out); `out` their ratio where the
    weights add up to more than 1e-3."""
    h, w = total.shape
    channels = values.shape[1]
    for i in range(xs.shape[0]):
        x, y = xs[i], ys[i]
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for corner in range(4):
            dx, dy = corner & 1, corner >> 1
            weight = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy)
            xi, yi = x0 + dx, y0 + dy
            if weight > 0 and 0 <= xi < w and 0 <= yi < h:
                total[yi, xi] += weight
                for c in range(channels):
                    acc[yi, xi, c] += values[i, c] * weight
    for yi in range(h):
        for xi in range(w):
            if total[yi, xi] > 1e-3:
                for c in range(channels):
                    out[yi, xi, c] = acc[yi, xi, c] / total[yi, xi]


class FaceWarper:
    """Holds the still and its triangulation; warps it to any target landmarks of the same mesh."""

    def __init__(self, still: np.ndarray, still_landmarks: np.ndarray, size: int = CROP_SIZE):
        self.still = np.ascontiguousarray(still)
        self.size = size
        self.face_src = np.asarray(still_landmarks, dtype=np.float64)[:, :2]
        centre = self.face_src[FACE_OVAL].mean(0)
        oval = self.face_src[FACE_OVAL] - centre
        inside = lambda p: np.all((p > 1) & (p < size - 2), axis=1)  # noqa: E731
        self.band = []
        for radius in BAND:
            pts = centre + radius * oval
            keep = inside(pts)
            self.band.append((pts[keep], FACE_OVAL[keep], (radius - 1) / (RINGS[0][0] - 1)))
        self.rings = []
        for radius, follow in RINGS:
            pts = centre + radius * oval
            self.rings.append((pts[inside(pts)], follow))
        edge = np.linspace(-1.0, size, BORDER_STEPS + 1)
        lo, hi = np.full_like(edge, -1.0), np.full_like(edge, float(size))
        border = np.concatenate([np.stack([edge, lo], 1), np.stack([edge, hi], 1),
                                 np.stack([lo, edge], 1), np.stack([hi, edge], 1)])
        self.border = np.unique(border, axis=0)
        self.src_points = self._control_points(self.face_src, np.eye(2, 3))
        self.triangles = Delaunay(self.src_points).simplices.astype(np.int32)
        self.movable = np.ones(len(self.src_points), bool)
        self.movable[-len(self.border):] = False
        self.orientation = _orientation(self.src_points, self.triangles)

    def _control_points(self, face: np.ndarray, head: np.ndarray) -> np.ndarray:
        parts = [face]
        linear = head[:, :2]
        for pts, outline, toward_ring in self.band:
            with_outline = face[outline] + (pts - self.face_src[outline]) @ linear.T
            rigid = pts @ linear.T + head[:, 2]
            parts.append((1 - toward_ring) * with_outline + toward_ring * rigid)
        for pts, follow in self.rings:
            moved = pts @ head[:, :2].T + head[:, 2]
            parts.append(pts + follow * (moved - pts))
        parts.append(self.border)
        return np.concatenate(parts)

    def _head(self, face: np.ndarray) -> np.ndarray:
        """The similarity (2x3) that best takes the still's face outline to `face`'s."""
        return _similarity_2d(self.face_src[FACE_OVAL], face[FACE_OVAL])

    def target_points(self, target_landmarks: np.ndarray) -> np.ndarray:
        face = np.asarray(target_landmarks, dtype=np.float64)[:, :2]
        return self._control_points(face, self._head(face))

    def maps(self, target_landmarks: np.ndarray, box: tuple[int, int, int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps (map_x, map_y): for each output pixel, where to sample the still. `box`
        (x0, y0, x1, y1): only that part of the output (the maps are then its size)."""
        face = np.asarray(target_landmarks, dtype=np.float64)[:, :2]
        head = self._head(face)         # fitted once: the control points and the outline's bend use it
        dst = self._control_points(face, head)
        triangles = self.triangles
        if box is not None:
            # only the triangles near the box, unfolded among themselves (a fold elsewhere moves no pixel
            # of the box; unfolding the whole mesh for a mouth or an eye cost as much as the box itself)
            # (a triangle is far when all its corners lie beyond one side of the padded box: tested per
            # point, then gathered, 0.2 ms where each triangle's bounding box took 0.75 ms, a 2-core EPYC)
            x0, y0, x1, y1 = box
            pad = 8.0
            xs, ys = dst[:, 0], dst[:, 1]
            far = np.zeros(len(triangles), bool)
            for beyond in (xs < x0 - pad, xs > x1 + pad, ys < y0 - pad, ys > y1 + pad):
                far |= beyond[triangles].all(1)
            triangles, sign = triangles[~far], self.orientation[~far]
        else:
            sign = self.orientation
        dst, _ = unfold(self.src_points, dst, triangles, self.movable, sign=sign)
        whole = box is None
        box = (0, 0, self.size, self.size) if whole else box
        tri_dst = dst[triangles]                                  # (T, 3, 2)
        affine = _affines(tri_dst, self.src_points[triangles])   # (T, 3, 2)
        map_x, map_y = backward_maps(tri_dst, affine, self._far_to_near(target_landmarks, triangles), box)
        if whole:
            outline = face[FACE_OVAL]
            bend = outline_bend(self.face_src[FACE_OVAL], outline, head)
            map_x, map_y = smooth_outline(map_x, map_y, outline, (bend - BEND_FROM) / (BEND_FULL - BEND_FROM))
        return map_x, map_y

    def _far_to_near(self, target_landmarks: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """Triangle order for drawing: the surroundings first, then the face from far to near (MediaPipe's
        z grows away from the camera), so where a turned cheek's triangles overlap, the nearer wins."""
        target = np.asarray(target_landmarks, dtype=np.float64)
        if target.shape[1] < 3:
            return np.arange(len(triangles))
        z = np.full(len(self.src_points), np.inf)
        z[:len(target)] = target[:, 2]
        depth = z[triangles].mean(1)
        return np.argsort(-depth, kind="stable")

    def warp(self, target_landmarks: np.ndarray, box: tuple[int, int, int, int] | None = None
             ) -> np.ndarray:
        """The still warped to target_landmarks; with `box` (x0, y0, x1, y1) only that part of it."""
        return remap(self.still, self.maps(target_landmarks, box))

    def folded_count(self, target_landmarks: np.ndarray) -> int:
        """Folded triangles left in the mesh this warper draws for target_landmarks (0 by design)."""
        dst, _ = unfold(self.src_points, self.target_points(target_landmarks), self.triangles,
                        self.movable)
        return int(folded(self.src_points, dst, self.triangles).sum())
