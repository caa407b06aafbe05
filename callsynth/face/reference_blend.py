"""Rendering with reference stills: the mouth interior and the eyes come from the picture that shows them.

A warp cannot draw what its still lacks: a lid over an open eye, teeth behind closed lips. The sender
therefore sends a few reference stills as they happen (mouth open with teeth, eyes closed; see
sender/reference_pick.py). Here each reference is warped to the target landmarks like the still, and
blended in where it matches the target better, with analytic weights:

- mouth: inside the target's inner-lip outline (grown a pixel and feathered, so the seam falls on the
  lip line), fully once the mouth is open, from the source (a reference or the still) the sender named:
  it sees the real mouth, compares each source's interior with it and names the nearest
  (sender/mouth_choice.py); where it named none, or one not held here, from the source whose lip gap is
  nearest the target's, visible teeth counting in its favour; drawn with its teeth their own height, what
  lies between them giving way first (interior_maps); then the sender's interior code adds how
  the real interior differs from that drawing (face/interior_code.py), since the sender draws it too
  (`drawn_mouth`);
- eyes: around each eye, from the reference with the eye most closed, coming in as the target's eye
  closes below EYE_START of its usual openness and fully from CLOSED_SHARE down. Usual: the median of the
  frames of the last half minute (within 0.7-1.5x the still's), the still's own until a second has been
  seen: measured against a still taken with the eyes wide, every ordinary moment looked like a blink begun
  and a third of the open-eye frames were drawn half shut.

Before a closed-eye reference has arrived, the blender uses one it makes from the still itself: each eye
opening, lashes and liner painted over from the skin around it, with a lash line where the lids' landmarks
now meet (`closed_eyes`). Before an open-mouth reference, an open mouth is darkened. So a blink and a
dark mouth show from the first frame. The generator learns these weights later; this is the part that
works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .code import NO_CUE, MouthCue
from .interior_code import paint
from .regions import (EYE_OUTLINES, INNER_LIPS, IRISES, LOWER_INNER, OPEN_MOUTH, UPPER_INNER, eye_openness,
                      is_teeth, lip_gap, polygon_mask, teeth_share)
from .still import Still
from ..compiled import compiled
from .warp import FaceWarper, remap

SYNTHETIC = -1           # index of the closed-eye picture made from the still
OWN = -2                 # index of the still itself as a mouth source
NOT_NAMED = object()     # a mouth source that names no picture held

MOUTH_FULL = 0.10        # from here the interior is the reference's alone (0.16 before 2026-11-30: a
                         # half-blended interior turned teeth into pale lips, README "Eyes, teeth and edges")
CLOSED_SHARE = 0.6       # an eye below this share of its usual openness is blinking (ReferenceBlender.usual)
DARK_MOUTH = 0.12        # with no open-mouth picture, a mouth open this far is drawn darker
LIP_HOLD = 0.2           # of a mouth drawn narrower than its picture's, the least share each lip keeps
CORNER_SPAN = (0.1, 0.25)  # corner-to-corner shares from which the interior leaves the triangle warp's maps
ROW_DEPTHS = np.linspace(0.0, 1.0, 33)   # where a picture's interior is read, upper lip (0) to lower (1)
TEETH_WEIGHT = 1.5       # how much a source's visible teeth count against a lip gap unlike the target's
EYE_START = 0.8          # the closed-eye texture starts to come in below this share
EYE_HISTORY = 900        # frames (30 s at 30 fps) whose median openness is the eyes' usual
EYE_HISTORY_MIN = 30     # frames seen before that median stands for the usual (the still's before)
USUAL_RANGE = (0.7, 1.5)  # the usual, as a share of the still's: a long closure does not become usual
LINER_REACH = 0.18       # eye widths past the outline where dark make-up and lashes are painted over (brows
                         # begin 0.26 or more eye widths above the outline on the 82 portraits looked at)
LINER_DARK = 0.8         # ... when darker than this share of the skin round the eye


@dataclass
class Reference:
    """A picture the blend draws from, with what is measured of it once: its lip gap, eye openness, teeth
    share, and its mouth interior's lip frame and rows (`_lip_frame`, `_interior_rows`)."""

    index: int
    still: Still
    warper: FaceWarper
    gap: float
    openness: np.ndarray
    teeth: float
    lips: tuple
    rows: np.ndarray
    band: float       # where its interior opens when drawn wider than it (_band_opening); -1: stretched whole

    @classmethod
    def of(cls, index: int, still: Still, opens: bool = False) -> Reference:
        """`opens`: drawn wider than its own mouth, the interior opens at its band (the still: any moment,
        often the tongue between barely parted lips); otherwise it is stretched whole (a reference: the
        widest open mouth with teeth the sender saw, which a wider mouth shows more of)."""
        lips = _lip_frame(still.landmarks)
        rows = _interior_rows(still.image, lips)
        return cls(index, still, FaceWarper(still.image, still.landmarks), lip_gap(still.landmarks),
                   eye_openness(still.landmarks), teeth_share(still.image, still.landmarks), lips, rows,
                   _band_opening(rows) if opens else -1.0)


def _box(points: np.ndarray, margin: float, size: int) -> tuple[int, int, int, int]:
    lo, hi = points[:, :2].min(0) - margin, points[:, :2].max(0) + margin
    x0, y0 = (int(max(0, np.floor(v))) for v in lo)
    x1, y1 = (int(min(size, np.ceil(v) + 1)) for v in hi)
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


def _match_colour(patch: np.ndarray, base: np.ndarray, inner: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Shift the patch's colour so that it agrees with the base on the ring around the blended region
    (a reference taken under other light would otherwise show its seam)."""
    if ring.sum() < 10:
        return patch
    offset = base[ring].astype(np.float32).mean(0) - patch[ring].astype(np.float32).mean(0)
    return np.clip(patch.astype(np.float32) + offset, 0, 255)


def _lids(landmarks: np.ndarray, outline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower): the landmark indices of one eye's lids, corner to corner, each sorted left to right."""
    outline = np.asarray(outline)
    first, second = outline[:9], np.append(outline[8:], outline[0])   # the outlines start at one corner,
    if landmarks[first, 1].mean() >= landmarks[second, 1].mean():     # index 8 is the other
        first, second = second, first
    return first[np.argsort(landmarks[first, 0])], second[np.argsort(landmarks[second, 0])]


def _lid_curves(landmarks: np.ndarray, outline: np.ndarray):
    """(upper, lower) lid outline points of one eye, each sorted left to right."""
    upper, lower = _lids(landmarks, outline)
    return landmarks[upper, :2], landmarks[lower, :2]


def _lid_skin(region: np.ndarray, ring: np.ndarray, lower_half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(above, below): the skin colour around an eye over and under its middle, from the brighter half of
    the ring's pixels (brows, lashes, liner and shadow are the darker half)."""
    def bright_median(sel):
        px = region[sel].reshape(-1, 3).astype(np.float32)
        if len(px) < 10:
            return None
        lum = px.mean(1)
        return np.median(px[lum >= np.median(lum)], axis=0)
    above, below = bright_median(ring & ~lower_half), bright_median(ring & lower_half)
    if above is None and below is None:
        above = below = region.reshape(-1, 3).mean(0).astype(np.float32)
    return (below if above is None else above), (above if below is None else below)


def _lash_curve(upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a closed eye's lash line: between the lids' fitted curves, a tenth of the way up from the
    lower one (smooth where the landmarks are not)."""
    xs = np.linspace(lower[0, 0], lower[-1, 0], 24)
    low_fit = np.polyval(np.polyfit(lower[:, 0], lower[:, 1], 2), xs)
    return xs, low_fit + 0.1 * (np.polyval(np.polyfit(upper[:, 0], upper[:, 1], 2), xs) - low_fit)


def _lid(region: np.ndarray, local: np.ndarray, width: float, hole: np.ndarray, ring: np.ndarray,
         lash_y: np.ndarray, seed: int) -> np.ndarray:
    """The closed lid's colours over `region` (float): inpainted from the skin round the hole, no darker
    than 0.9 of the lid skin, toward the middle half the plain skin colour, a little darker toward the
    lash line (row `lash_y` in each column), with the skin's own grain."""
    middle = local.mean(0)
    rows = np.arange(region.shape[0], dtype=np.float32)
    above, below = _lid_skin(region, ring, np.broadcast_to(rows[:, None] >= middle[1], ring.shape))
    top, bottom = local[:, 1].min() - 0.16 * width, local[:, 1].max() + 0.09 * width
    t = np.clip((rows - top) / max(1.0, bottom - top), 0, 1)[:, None, None]
    flat = (above * (1 - 0.5 * t) + below * 0.5 * t) * np.ones(region.shape, np.float32)
    painted = cv2.inpaint(np.ascontiguousarray(region), hole.astype(np.uint8), max(3, int(0.1 * width)),
                          cv2.INPAINT_TELEA).astype(np.float32)
    painted = cv2.GaussianBlur(painted, (0, 0), 0.08 * width)
    lum_p, lum_f = painted.mean(2, keepdims=True), flat.mean(2, keepdims=True)
    # too dark (lashes, liner the inpainting carried in): moved toward the skin's colour until 0.9 of its
    # level; scaled up instead, a dark red-brown became a saturated red streak
    lift = np.clip((0.9 * lum_f - lum_p) / np.maximum(lum_f - lum_p, 1), 0, 1)
    painted = painted + lift * (flat - painted)
    # at the edge the inpainting alone (it meets the skin around without a seam), inside half the flat skin
    inner = np.clip(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3) / (0.15 * width), 0, 1)
    lid = painted + 0.5 * inner[..., None] * (flat - painted)
    near_lash = np.clip(1 - np.abs(rows[:, None] - lash_y[None, :]) / (0.18 * width), 0, 1)
    lid *= (1.0 - 0.10 * near_lash)[..., None]
    fine = region.astype(np.float32) - cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.5)
    grain = float(np.std(fine[ring])) if ring.sum() > 10 else 0.0
    noise = np.random.default_rng(seed).standard_normal(region.shape[:2]).astype(np.float32)
    return lid + cv2.GaussianBlur(noise, (0, 0), 0.7)[..., None] * 1.6 * grain


def _shut_eye(image: np.ndarray, landmarks: np.ndarray, outline, xs: np.ndarray, line_y: np.ndarray) -> None:
    """Paint one eye of `image` shut along the lash line (xs, line_y), in place (closed_eyes)."""
    width = float(np.ptp(landmarks[outline, 0]))
    x0, y0, x1, y1 = _box(landmarks[outline], 0.5 * width, image.shape[0])
    region = image[y0:y1, x0:x1]
    local = landmarks[outline, :2] - (x0, y0)
    middle = local.mean(0)
    # the opening, its upper lashes (raised) and the liner's wings (widened)
    hole = np.maximum.reduce([
        polygon_mask(region.shape, local, grow=0.09 * width),
        polygon_mask(region.shape, local - (0, 0.07 * width), grow=0.09 * width),
        polygon_mask(region.shape, (local - middle) * (1.15, 1) + middle, grow=0.06 * width)]) > 0.2
    ring = (polygon_mask(region.shape, local, grow=0.28 * width) > 0.5) & ~(
        cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0)
    # liner, lashes and shadow past those shapes (heavy make-up): the pixels near the eye much darker than
    # the skin round it join the hole, or the lid's edge carried them round it as a dark ring
    lum = region.astype(np.float32).mean(2)
    skin = float(np.median(lum[ring])) if ring.sum() > 10 else float(lum.mean())
    near = polygon_mask(region.shape, local, grow=LINER_REACH * width) > 0.5
    hole = cv2.dilate(cv2.morphologyEx((hole | (near & (lum < LINER_DARK * skin))).astype(np.uint8),
                                       cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)), np.ones((3, 3), np.uint8)) > 0
    lash_y = np.interp(np.arange(region.shape[1]), xs - x0, line_y - y0)
    lid = _lid(region, local, width, hole, ring, lash_y, seed=x0 * 7919 + y0)
    cover = np.clip(np.maximum(cv2.GaussianBlur(hole.astype(np.float32), (0, 0), 0.07 * width) * 1.3,
                               polygon_mask(region.shape, local, grow=0.09 * width)), 0, 1)[..., None]
    mixed = region * (1 - cover) + lid * cover
    inside = polygon_mask(region.shape, local) > 0.5
    lash_colour = (np.percentile(region[inside].reshape(-1, 3), 5, axis=0) if inside.sum() > 10
                   else np.array([45, 35, 35], np.float32))
    lash = np.zeros(region.shape[:2], np.float32)
    line = np.round(np.stack([xs - x0, line_y - y0], 1) * 16).astype(np.int32)
    cv2.polylines(lash, [line], False, 1.0, max(1, int(round(width / 30))), cv2.LINE_AA, 4)
    lash = cv2.GaussianBlur(lash, (0, 0), 0.6)[..., None] * 0.75
    region[:] = np.clip(mixed * (1 - lash) + lash_colour * lash + 0.5, 0, 255).astype(np.uint8)


def closed_eyes(still: Still) -> Still:
    """The still with both eyes shut: each opening with its lashes and liner painted over from the skin
    around it (inpainted, no darker than the lid skin, with the skin's grain), a little darker toward a
    soft lash line that curves like a closed lid, and the lids' landmarks (and the iris's) laid on that
    line. A cover the size of the opening alone left the liner and lashes as a dark ring round a grey
    disc."""
    image = still.image.copy()
    landmarks = np.array(still.landmarks, dtype=np.float64, copy=True)
    for eye, outline in enumerate(EYE_OUTLINES):
        if np.ptp(landmarks[outline, 0]) < 4:           # too small to draw or to fit
            continue
        xs, line_y = _lash_curve(*_lid_curves(landmarks, outline))
        _shut_eye(image, landmarks, outline, xs, line_y)
        for points in (outline, IRISES[eye]):
            landmarks[points, 1] = np.interp(landmarks[points, 0], xs, line_y)
    return Still(image, landmarks)


def smooth_lids(landmarks: np.ndarray, eye: int) -> np.ndarray:
    """A copy of `landmarks` with eye `eye`'s lids each on a fitted parabola, the upper one nowhere below
    the lower and the iris between them: a closing eye's landmarks (tracked, or a code's blink) zigzag
    and cross, and a closed-eye picture warped to them drew its lash line as a zigzag."""
    out = np.array(landmarks, dtype=np.float64, copy=True)
    outline = EYE_OUTLINES[eye]
    if np.ptp(out[outline, 0]) < 4:
        return out
    upper, lower = _lids(out, outline)
    fit_up = np.polyfit(out[upper, 0], out[upper, 1], 2)
    fit_low = np.polyfit(out[lower, 0], out[lower, 1], 2)
    for points, is_upper in ((lower, False), (upper, True), (IRISES[eye], None)):
        xs = out[points, 0]
        low, up = np.polyval(fit_low, xs), np.polyval(fit_up, xs)
        up = np.minimum(up, low)
        out[points, 1] = low if is_upper is False else up if is_upper else np.clip(out[points, 1], up, low)
    return out


def closed_eye_patch(source: Still, target: np.ndarray, eye: int,
                     box: tuple[int, int, int, int]) -> np.ndarray | None:
    """Eye `eye` of `source` (a picture with that eye closed) drawn into `box` of a frame at `target`:
    moved by the similarity that takes its eye corners onto the target's, and bent near the lids so that
    its lash line lies on the target's. A closed eye has no inner structure for the mesh warp to follow:
    warped through the thin, crossing triangles between its lids, its lash line came out as a zigzag.
    None when either eye's corners meet (nothing to move it by)."""
    outline = EYE_OUTLINES[eye]
    src_a, src_b, dst_a, dst_b = (complex(*lm[i, :2]) for lm in (source.landmarks, target)
                                  for i in (outline[0], outline[8]))
    if abs(dst_b - dst_a) < 1 or abs(src_b - src_a) < 1:
        return None
    scale = (src_b - src_a) / (dst_b - dst_a)                     # target → source, as a complex factor
    x0, y0, x1, y1 = box
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    z = (gx + 1j * gy - dst_a) * scale + src_a
    src_x, src_y = _lash_curve(*_lid_curves(np.asarray(source.landmarks, np.float64), outline))
    dst_x, dst_y = _lash_curve(*_lid_curves(smooth_lids(target, eye), outline))
    line = (dst_x + 1j * dst_y - dst_a) * scale + src_a             # the target's lash line, in the source
    order = np.argsort(line.real)
    on_target_line = np.interp(z.real, line.real[order], line.imag[order])
    shift = np.interp(z.real, src_x, src_y) - on_target_line
    near = np.clip(1 - np.abs(z.imag - on_target_line) / (0.5 * abs(src_b - src_a)), 0, 1)
    maps = (z.real.astype(np.float32), (z.imag + shift * near).astype(np.float32))
    return cv2.remap(source.image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def eye_region(landmarks: np.ndarray, eye: int, size: int):
    """Where a picture of size² at `landmarks` has eye `eye`, as the blend redraws a closing one: (box,
    the eye's outline in the box, its feathered mask in the box)."""
    outline = landmarks[EYE_OUTLINES[eye]]
    width = float(np.ptp(outline[:, 0]))
    x0, y0, x1, y1 = box = _box(outline, 0.45 * width + 3, size)
    local = outline[:, :2] - (x0, y0)
    return box, local, polygon_mask((y1 - y0, x1 - x0), local, grow=0.3 * width, feather=0.12 * width)


def eyes_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) in [0, 1]: both eyes' regions (eye_region) of a picture at `landmarks`."""
    mask = np.zeros((size, size), np.float32)
    for eye in range(len(EYE_OUTLINES)):
        (x0, y0, x1, y1), _, area = eye_region(landmarks, eye, size)
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], area)
    return mask


def mouth_weight(target: np.ndarray) -> float:
    """How much of a mouth open at `target` is drawn from another picture (gap_weight of its lip gap)."""
    return gap_weight(lip_gap(target))


def gap_weight(gap) -> np.ndarray | float:
    """How much of a mouth of lip gap `gap` (a float or an array) is drawn from another picture: 0 while it
    is closed (under 0.6 of the open-mouth gap), all of it from MOUTH_FULL."""
    weight = np.clip((np.asarray(gap, np.float64) - OPEN_MOUTH * 0.6) / (MOUTH_FULL - OPEN_MOUTH * 0.6), 0, 1)
    return float(weight) if weight.ndim == 0 else weight


def lends_mouth(gap: float) -> bool:
    """Whether a picture whose lip gap is `gap` may lend an open mouth its interior: its own is open."""
    return gap >= OPEN_MOUTH


def mouth_area(target: np.ndarray, size: int):
    """Where a mouth open at `target` is drawn from another picture: (box, the inner lips in the box, their
    mask grown a pixel and feathered, so the seam falls on the lip line; weight, mouth_weight), or None
    while the mouth is closed."""
    weight = mouth_weight(target)
    if weight <= 0:
        return None
    lips = target[INNER_LIPS]
    width = float(np.ptp(lips[:, 0]))
    x0, y0, x1, y1 = box = _box(lips, 0.25 * width + 4, size)
    local = lips[:, :2] - (x0, y0)
    return box, local, polygon_mask((y1 - y0, x1 - x0), local, grow=1.0, feather=1.0), weight


def _lip_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inner lips in the mouth's own frame: (left corner x, y, unit axis to the right corner, unit normal
    pointing down, corner distance) and the upper and lower lip as curves (upper s, upper v, lower s, lower
    v; 11 points each), s the share of the way from corner to corner, v pixels below the axis."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    left, right = pts[UPPER_INNER[0]], pts[UPPER_INNER[-1]]
    width = max(float(np.linalg.norm(right - left)), 1e-3)
    axis = (right - left) / width
    normal = np.array([-axis[1], axis[0]])
    curves = []
    for points in (pts[UPPER_INNER], pts[LOWER_INNER]):
        curves += [np.maximum.accumulate((points - left) @ axis / width), (points - left) @ normal]
    return np.array([*left, *axis, *normal, width]), np.stack(curves)


@compiled
def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """np.interp for one x (xs non-decreasing; at repeated xs, the last one's y, as numpy gives): numba's own
    np.interp costs five times this for one x (0.2 against 0.04 ms over a mouth's 3,200 look-ups, /tmp
    probe, 2-core AMD EPYC)."""
    n = len(xs)
    if x <= xs[0]:
        return ys[0]
    if x >= xs[n - 1]:
        return ys[n - 1]
    i = 1
    while xs[i] <= x:
        i += 1
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])


@compiled
def _interior_maps(map_x, map_y, inner, x0, y0, t_frame, t_curves, r_frame, r_curves, upper_share, band,
                   span0, span1):
    """interior_maps' arithmetic, a pixel at a time over the box's interior (inner > 0)."""
    scale = r_frame[6] / t_frame[6]
    for y in range(inner.shape[0]):
        for x in range(inner.shape[1]):
            if inner[y, x] <= 0:
                continue
            dx, dy = x + x0 - t_frame[0], y + y0 - t_frame[1]
            s = (dx * t_frame[2] + dy * t_frame[3]) / t_frame[6]
            v = dx * t_frame[4] + dy * t_frame[5]
            t_top, t_bottom = _interp(s, t_curves[0], t_curves[1]), _interp(s, t_curves[2], t_curves[3])
            r_top, r_bottom = _interp(s, r_curves[0], r_curves[1]), _interp(s, r_curves[2], r_curves[3])
            t_gap = max(t_bottom - t_top, 0.0) * scale
            r_gap = max(r_bottom - r_top, 0.0)
            below_top = (v - t_top) * scale
            above_bottom = (t_bottom - v) * scale
            if r_gap >= t_gap:              # narrower than the picture's: the band between gives way
                if below_top <= upper_share * t_gap:
                    r_v = r_top + below_top
                else:
                    r_v = r_bottom - above_bottom
            elif band < 0.0:                # wider, a reference: stretched whole
                squeeze = r_gap / max(t_gap, 1e-6)
                if below_top <= upper_share * t_gap:
                    r_v = r_top + below_top * squeeze
                else:
                    r_v = r_bottom - above_bottom * squeeze
            elif below_top <= band * r_gap:     # wider, the still: each lip keeps its side at its own scale ...
                r_v = r_top + below_top
            elif above_bottom <= (1.0 - band) * r_gap:
                r_v = r_bottom - above_bottom
            else:                           # ... and the band between them (cavity) opens
                r_v = r_top + band * r_gap
            middle = min(max((0.5 - abs(s - 0.5) - span0) / (span1 - span0), 0.0), 1.0)
            along = s * r_frame[6]
            map_x[y, x] += middle * (r_frame[0] + along * r_frame[2] + r_v * r_frame[4] - map_x[y, x])
            map_y[y, x] += middle * (r_frame[1] + along * r_frame[3] + r_v * r_frame[5] - map_y[y, x])


def _interior_rows(image: np.ndarray, lips: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A picture's mouth interior as 33 rows from its upper lip (0) to its lower (1) (`lips`: its
    _lip_frame), read across the middle half of the mouth: each row's share of teeth (regions.is_teeth)
    plus a tenth of its brightness (0-1), which only breaks ties."""
    (left_x, left_y, axis_x, axis_y, normal_x, normal_y, width), curves = lips
    s = np.linspace(0.25, 0.75, 11)[:, None]
    top, bottom = np.interp(s, curves[0], curves[1]), np.interp(s, curves[2], curves[3])
    v = top + ROW_DEPTHS * (bottom - top)
    points = np.stack([left_x + s * width * axis_x + v * normal_x, left_y + s * width * axis_y + v * normal_y], -1)
    rgb = cv2.remap(image, points[..., 0].astype(np.float32), points[..., 1].astype(np.float32),
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return (is_teeth(rgb) + rgb.astype(np.float32).mean(-1) / 2550).mean(0)


def _band_given_way(rows: np.ndarray, keep: float) -> float:
    """Which band of a picture's interior (its rows, _interior_rows) gives way when only `keep` of its height
    is drawn: the one with the fewest teeth and, of those, the darkest (cavity, tongue; a lip the outline
    took in); returned as the share of that height kept above it, at least LIP_HOLD of `keep` from each lip
    (teeth show right under the lips: a shadow there is no gap between them)."""
    area = np.concatenate([[0.0], np.cumsum((rows[1:] + rows[:-1]) / 2 * np.diff(ROW_DEPTHS))])
    starts = np.linspace(LIP_HOLD * keep, (1 - LIP_HOLD) * keep, 13)
    held = np.interp(starts + 1.0 - keep, ROW_DEPTHS, area) - np.interp(starts, ROW_DEPTHS, area)
    return float(starts[int(np.argmin(held))])


def _band_opening(rows: np.ndarray) -> float:
    """Where a picture's interior (its rows, _interior_rows) opens when the mouth is drawn wider than the
    picture's: its row with the fewest teeth and, of those, the darkest (above the tongue, or between the
    teeth), at least LIP_HOLD from each lip; as a share of the height from the upper lip."""
    inside = (ROW_DEPTHS >= LIP_HOLD) & (ROW_DEPTHS <= 1 - LIP_HOLD)
    return float(ROW_DEPTHS[inside][int(np.argmin(rows[inside]))])


def interior_maps(maps: tuple[np.ndarray, np.ndarray], inner: np.ndarray, box: tuple[int, int, int, int],
                  source: Reference, target: np.ndarray) -> None:
    """The backward maps of `source`'s triangle warp for `box` of a frame at `target` (FaceWarper.maps),
    changed in place where `inner` (the box's interior mask) is above 0 so that the interior is drawn with
    the picture's teeth their own height. The upper teeth hang from the upper lip and the lower ones stand
    on the lower lip: as a mouth closes, what lies between them (cavity, tongue) goes first. So a mouth
    narrower than the picture's is drawn from under the picture's upper lip and above its lower lip, less
    the band between them that gives way (_band_given_way); the triangle warp squeezed the whole interior
    between the lips instead, and a wide-open picture lent a half-open mouth thin teeth with a band of
    tongue or cavity between. A mouth wider open than a reference's stretches it, as the warp did (the
    sender picks a reference as the widest open mouth with teeth it saw). Wider open than the still's own
    (`source.band` set: Reference.of's `opens`), what lies under the upper lip and over the lower one is
    drawn at its own scale and the still's row where the interior opens (_band_opening: above the tongue,
    or between the teeth) fills the rest: the still is any moment, often mid-word, and stretched, its
    tongue grew as tall as the opening, which MediaPipe reads as lips pressed together (a GRID speaker's
    talking face read back a lip gap of 0.08 where 0.15 was drawn). Toward the corners, where the lips meet
    and no teeth show, the warp's place counts again (CORNER_SPAN)."""
    t_frame, t_curves = _lip_frame(target)
    (r_frame, r_curves), rows = source.lips, source.rows
    # how much of the picture's opening the target's shows, at the middle of the mouth
    opening = lambda curves: np.interp(0.5, curves[2], curves[3]) - np.interp(0.5, curves[0], curves[1])  # noqa: E731
    keep = opening(t_curves) * r_frame[6] / t_frame[6] / max(opening(r_curves), 1e-6)
    upper_share = _band_given_way(rows, keep) / keep if 0 < keep < 1 else 0.5
    _interior_maps(maps[0], maps[1], inner, box[0], box[1], t_frame, t_curves, r_frame, r_curves, upper_share,
                   source.band, *CORNER_SPAN)


def warm_up() -> None:
    """Load interior_maps' compiled kernel now (0.2 s from numba's cache, 0.7 s compiling it, on a 2-core
    EPYC): at a call's first open mouth it would hold up that frame, or the sender's packet."""
    frame, curves = _lip_frame(np.zeros((478, 2)))
    maps = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)
    _interior_maps(*maps, np.ones((1, 1), np.float32), 0, 0, frame, curves, frame, curves, 0.5, 0.5, *CORNER_SPAN)


def draw_mouth(out: np.ndarray, target: np.ndarray, source: Reference | None, area=None) -> np.ndarray:
    """Draw the mouth interior of `out` (a frame at `target`) from `source`'s picture (interior_maps), its
    colour matched to the lips around it (the triangle warp's picture there); with no source, darken it. In
    place; returns `out`."""
    area = area or mouth_area(target, out.shape[0])
    if area is None:
        return out
    (x0, y0, x1, y1), local, inner, weight = area
    region = out[y0:y1, x0:x1].astype(np.float32)
    if source is None:
        patch = region * 0.7
    else:
        ring = (polygon_mask(inner.shape, local, grow=4.0) > 0.5) & (inner < 0.02)
        maps = source.warper.maps(target, (x0, y0, x1, y1))
        interior_maps(maps, inner, (x0, y0, x1, y1), source, target)
        patch = _match_colour(remap(source.warper.still, maps), region, inner > 0.5, ring)
    alpha = (weight * inner)[..., None]
    out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


class ReferenceBlender:
    """The receiver's reference stills and the blend of them into a warped frame."""

    def __init__(self, still: Still):
        self.still = still
        self.still_open = eye_openness(still.landmarks)
        self.still_gap = lip_gap(still.landmarks)
        self.still_teeth = teeth_share(still.image, still.landmarks)
        self.seen_open = np.zeros((EYE_HISTORY, 2))     # the last EYE_HISTORY composed frames' eye openness,
        self.seen = 0                                   # a ring: frame i at i % EYE_HISTORY
        self.usual = self.still_open                    # each eye's usual openness: its closing is measured against it
        self.references: dict[int, Reference] = {}
        self.synthetic = Reference.of(SYNTHETIC, closed_eyes(still))
        # the still as a mouth source, when its own mouth is open: its interior drawn as a reference's is
        # (interior_maps), not stretched or squeezed whole by the triangle warp
        self.own_mouth = Reference.of(OWN, still, opens=True) if lends_mouth(self.still_gap) else None
        # open mouths drawn from the picture the sender named, and from this blend's own choice (none named,
        # or one not held yet): a call's STATS.json reports them
        self.mouth_choices = {"named": 0, "own": 0}

    def add(self, index: int, still: Still) -> Reference:
        """Cache (or replace) reference `index`."""
        ref = Reference.of(index, still)
        # Copy on write: a render in a worker thread may be reading the old dict right now.
        self.references = {**self.references, index: ref}
        return ref

    def compose(self, base: np.ndarray, target: np.ndarray, cue: MouthCue = NO_CUE) -> np.ndarray:
        """`base`: the still warped to `target` (crop-pixel landmarks), a frame of its own: the mouth
        and eyes are blended into it in place, and it is returned. `cue`: the sender's mouth source (none
        named: choose here) and interior code."""
        self._note_openness(target)
        for eye in range(2):
            self._eye(base, target, eye)
        if self._mouth(base, target, cue.source):
            paint(base, target, cue.interior)
        return base

    def drawn_mouth(self, warper: FaceWarper, target: np.ndarray, size: int, mouth: int = 0) -> np.ndarray | None:
        """What `compose` draws of an open mouth at `target` before its interior code, for a sender that
        mirrors its receiver's pictures: a size x size frame holding the mouth's area only (`warper`: the
        still's), or None where the mouth is drawn closed (no code to send)."""
        area = mouth_area(target, size)
        if area is None:
            return None
        x0, y0, x1, y1 = area[0]
        out = np.zeros((size, size, 3), np.uint8)
        out[y0:y1, x0:x1] = warper.warp(target, area[0])
        self._mouth(out, target, mouth, count=False)
        return out

    # --- mouth ----------------------------------------------------------------------------------------

    def mouth_sources(self) -> list[Reference | None]:
        """The pictures an open mouth may be drawn from: the references whose mouth is open, and the still
        (None; the warp already drew its mouth) when its own is."""
        sources: list[Reference | None] = [r for r in list(self.references.values()) if lends_mouth(r.gap)]
        if lends_mouth(self.still_gap):
            sources.append(None)
        return sources

    @staticmethod
    def named_source(mouth: int, sources: list[Reference | None]):
        """The source of `sources` that mouth source `mouth` names (identity index + 1; None is the still's
        index 0), or NOT_NAMED (0, or a picture not among them)."""
        for source in sources:
            if mouth == (0 if source is None else source.index) + 1:
                return source
        return NOT_NAMED

    def _mouth(self, out: np.ndarray, target: np.ndarray, mouth: int = 0, count: bool = True) -> bool:
        """Draw an open mouth's interior (`count`: in mouth_choices); whether the mouth is drawn open."""
        area = mouth_area(target, out.shape[0])
        if area is None:
            return False
        gap = lip_gap(target)
        sources = self.mouth_sources()
        if not sources:
            if gap >= DARK_MOUTH:
                draw_mouth(out, target, None, area)   # nothing shows this mouth open yet: darker
            return True
        ref = self.named_source(mouth, sources)
        if count:
            self.mouth_choices["own" if ref is NOT_NAMED else "named"] += 1
        if ref is NOT_NAMED:
            ref = min(sources, key=lambda source: self._mouth_mismatch(source, target, gap))
        draw_mouth(out, target, self.own_mouth if ref is None else ref, area)
        return True

    def _mouth_mismatch(self, ref: Reference | None, target: np.ndarray, gap: float) -> float:
        """How unlike the target's mouth a source's is (None: the still)."""
        source_gap, teeth = (self.still_gap, self.still_teeth) if ref is None else (ref.gap, ref.teeth)
        return abs(np.log(source_gap / max(gap, 1e-3))) - TEETH_WEIGHT * teeth

    # --- eyes -----------------------------------------------------------------------------------------

    def _note_openness(self, target: np.ndarray) -> None:
        """A composed frame's eye openness into the ring, and the usual openness from it, once a frame (every
        eye the frame draws, and a repair's closing_eyes, read it)."""
        self.seen_open[self.seen % EYE_HISTORY] = eye_openness(target)
        self.seen += 1
        if self.seen >= EYE_HISTORY_MIN:
            self.usual = np.clip(np.median(self.seen_open[:min(self.seen, EYE_HISTORY)], axis=0),
                                 USUAL_RANGE[0] * self.still_open, USUAL_RANGE[1] * self.still_open)

    def _eye_area(self, target: np.ndarray, eye: int, size: int):
        """Where the closing eye `eye` is drawn from a closed-eye picture: (box, outline in the box, the
        area's mask in the box, weight), or None while the eye is open."""
        opened = float(eye_openness(target)[eye])
        usual = float(self.usual[eye])
        if opened >= EYE_START * usual:
            return None
        box, local, area = eye_region(target, eye, size)
        # Fully closed-eye texture from CLOSED_SHARE of the usual openness down: MediaPipe (and a
        # viewer) reads a warped open eye as open even when its lids are drawn half way down, and a
        # cross-fade of an open and a closed eye reads as neither.
        start, full = EYE_START * usual, CLOSED_SHARE * usual
        return box, local, area, float(np.clip((start - opened) / (start - full), 0, 1))

    def closing_eyes(self, target: np.ndarray, size: int) -> np.ndarray | None:
        """(size, size) in [0, 1]: how much of each pixel the blend draws from a closed-eye picture for
        `target` (None while both eyes are open), so that a later repair can leave a blink as drawn."""
        alpha = None
        for eye in range(2):
            found = self._eye_area(target, eye, size)
            if found is None:
                continue
            (x0, y0, x1, y1), _, area, weight = found
            alpha = np.zeros((size, size), np.float32) if alpha is None else alpha
            alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], weight * area)
        return alpha

    def _eye(self, out: np.ndarray, target: np.ndarray, eye: int) -> None:
        found = self._eye_area(target, eye, out.shape[0])
        if found is None:
            return
        box, local, area, weight = found
        x0, y0, x1, y1 = box
        region = out[y0:y1, x0:x1].astype(np.float32)
        width = float(np.ptp(local[:, 0]))
        usual = float(self.usual[eye])
        closed = [r for r in list(self.references.values()) if r.openness[eye] < CLOSED_SHARE * usual]
        ref = min(closed, key=lambda r: r.openness[eye]) if closed else self.synthetic
        patch = closed_eye_patch(ref.still, target, eye, box)
        patch = ref.warper.warp(target, box) if patch is None else patch
        ring = (polygon_mask(region.shape, local, grow=0.45 * width) > 0.5) & (area < 0.02)
        patch = _match_colour(patch, region, area > 0.5, ring)
        alpha = (weight * area)[..., None]
        out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
