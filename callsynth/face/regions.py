"""Where the eyes, irises and lips are in MediaPipe's 478-point mesh, and the measures of them that the
evaluator uses: eye openness (lid gap over eye width), gaze (iris offset from the eye centre over eye
width) and lip gap (inner-lip gap over the iris distance).

Sender (reference picking, gaze on the wire), receiver (which reference to blend where) and `eval` read
them from here, so all three measure a face the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

# (upper lid, lower lid, outer corner, inner corner, iris centre) of each eye, as face_metrics.py has them.
EYES = ((159, 145, 33, 133, 468), (386, 374, 362, 263, 473))
IRISES = (np.arange(468, 473), np.arange(473, 478))
EYE_OUTLINES = (np.array([33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]),
                np.array([362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382]))
INNER_LIPS = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
                       88, 95])
LIP_CENTRE = (13, 14)
OPEN_MOUTH = 0.08              # lip gap (over iris distance) from which the evaluator calls a mouth open
TEETH_V, TEETH_S = 150, 90     # a teeth pixel: HSV value above TEETH_V, saturation below TEETH_S (0-255)
GAZE_DIMS = 2
# The lips, upper and lower halves of the inner and the outer outline, from one corner to the other (the
# corners 78 / 308 and 61 / 291 stay where they are when the lip gap is corrected: open_lips).
UPPER_LIP = np.array([191, 80, 81, 82, 13, 312, 311, 310, 415, 185, 40, 39, 37, 0, 267, 269, 270, 409])
LOWER_LIP = np.array([95, 88, 178, 87, 14, 317, 402, 318, 324, 146, 91, 181, 84, 17, 314, 405, 321, 375])
MOUTH_CORNERS = (61, 291)
LIPS = np.unique(np.concatenate([INNER_LIPS, UPPER_LIP, LOWER_LIP, MOUTH_CORNERS]))   # every point of the lips
UPPER_SHARE = 0.5          # of a lip-gap correction, what the upper lip takes (all of it on the lower lip,
                           # as a jaw would, was tried: README, "The lip gap's correction")


def iris_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[468, :2] - landmarks[473, :2]))


def lip_gap(landmarks: np.ndarray) -> float:
    """Inner-lip gap over the iris distance (the evaluator's open mouth: ≥ 0.08)."""
    lm = np.asarray(landmarks)
    return float(np.linalg.norm(lm[LIP_CENTRE[0], :2] - lm[LIP_CENTRE[1], :2])) / max(iris_distance(lm), 1e-6)


def open_lips(canonical: np.ndarray, change: float) -> np.ndarray:
    """Canonical landmarks with the lips parted `change` iris distances further (lip_gap of the face seen
    from the front; closer when negative, never past closed): the upper lip moves UPPER_SHARE of it, the
    lower the rest, along the face's up-down axis, fully at the middle and not at the corners, the outer
    outline with the inner so that the lips keep their thickness."""
    c = np.array(canonical, dtype=np.float64, copy=True)
    change = max(float(change), -lip_gap(c))
    if change == 0.0:
        return c
    eyes = iris_distance(c)
    across = c[MOUTH_CORNERS[1]] - c[MOUTH_CORNERS[0]]
    half = max(float(np.linalg.norm(across)) / 2, 1e-9)
    across /= 2 * half
    down = c[152] - c[10]                                  # forehead to chin
    down -= (down @ across) * across
    down /= max(float(np.linalg.norm(down)), 1e-12)
    middle = (c[MOUTH_CORNERS[0]] + c[MOUTH_CORNERS[1]]) / 2
    for points, share in ((UPPER_LIP, -UPPER_SHARE), (LOWER_LIP, 1 - UPPER_SHARE)):
        weight = np.clip(1 - ((c[points] - middle) @ across / half) ** 2, 0, 1)
        c[points] += (share * change * eyes * weight)[:, None] * down
    return c


def _eye_frame(lm: np.ndarray, eye) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre, unit axis corner to corner, unit normal, width) of one eye."""
    c1, c2 = lm[eye[2], :2], lm[eye[3], :2]
    axis = c2 - c1
    width = float(np.linalg.norm(axis))
    u = axis / max(width, 1e-6)
    if u[0] < 0:                       # always left to right in the image
        u = -u
    return (c1 + c2) / 2, u, np.array([-u[1], u[0]]), max(width, 1e-6)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Lid gap over eye width, for each eye (2,)."""
    lm = np.asarray(landmarks)
    return np.array([np.linalg.norm(lm[e[0], :2] - lm[e[1], :2]) / _eye_frame(lm, e)[3] for e in EYES])


def eye_gazes(landmarks: np.ndarray) -> np.ndarray:
    """Each eye's iris offset from its centre over its width, along and across its axis (2 eyes, 2)."""
    lm = np.asarray(landmarks)
    out = []
    for e in EYES:
        centre, u, v, width = _eye_frame(lm, e)
        off = lm[e[4], :2] - centre
        out.append([off @ u / width, off @ v / width])
    return np.array(out)


def gaze(landmarks: np.ndarray) -> np.ndarray:
    """Iris offset from the eye centre over eye width, along and across the eye axis, mean of both eyes (2,)."""
    return eye_gazes(landmarks).mean(axis=0)


def with_gaze(landmarks: np.ndarray, target_gaze: np.ndarray) -> np.ndarray:
    """The landmarks with the irises moved (as rigid rings) to `target_gaze`: one offset for both eyes (2,),
    or each eye's own (2, 2) as eye_gazes gives them; either way gaze(·) is its mean."""
    lm = np.array(landmarks, dtype=np.float64, copy=True)
    g = np.broadcast_to(np.clip(np.asarray(target_gaze, dtype=np.float64), -0.35, 0.35), (len(EYES), 2))
    for e, iris, eye_gaze in zip(EYES, IRISES, g):
        centre, u, v, width = _eye_frame(lm, e)
        want = centre + width * (eye_gaze[0] * u + eye_gaze[1] * v)
        lm[iris, :2] += want - lm[e[4], :2]
    return lm


def polygon_mask(shape, points: np.ndarray, grow: float = 0.0, feather: float = 0.0) -> np.ndarray:
    """A float mask in [0, 1] of the polygon, grown by `grow` pixels and feathered by `feather` (sigma)."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points)[:, :2] * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    if grow > 0:
        k = int(2 * round(grow) + 1)
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    out = mask.astype(np.float32) / 255
    if feather > 0:
        out = cv2.GaussianBlur(out, (0, 0), feather)
    return out


INTERIOR_GRID = (8, 16)     # rows (lip to lip) x columns (corner to corner) of interior_grid
UPPER_INNER = INNER_LIPS[:11]                                     # corner 78 along the upper inner lip to 308
LOWER_INNER = INNER_LIPS[np.r_[0, np.arange(19, 9, -1)]]          # corner 78 along the lower inner lip to 308


def interior_grid(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = INTERIOR_GRID) -> np.ndarray:
    """The mouth's interior sampled on a grid stretched between the inner lips: columns from corner to
    corner along both lips, rows from the upper lip to the lower (grid lines on neither). The warp maps one
    picture's interior onto another's lips much the same way, so two pictures' grids compare point by point
    whatever their openings. (rows, columns, channels) float32."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    rows, cols = size
    t = np.linspace(0, len(UPPER_INNER) - 1, cols + 2)[1:-1]
    steps = np.arange(len(UPPER_INNER))
    upper = np.stack([np.interp(t, steps, lm[UPPER_INNER, k]) for k in range(2)], axis=1)
    lower = np.stack([np.interp(t, steps, lm[LOWER_INNER, k]) for k in range(2)], axis=1)
    v = np.linspace(0, 1, rows + 2)[1:-1, None, None]
    points = (upper[None] * (1 - v) + lower[None] * v).astype(np.float32)
    return cv2.remap(np.ascontiguousarray(image), points[..., 0], points[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def is_teeth(rgb: np.ndarray) -> np.ndarray:
    """Which pixels of an RGB uint8 picture are bright and unsaturated (HSV V > 150, S < 90): teeth, as the
    evaluator counts them."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    return (hsv[..., 2] > TEETH_V) & (hsv[..., 1] < TEETH_S)


def inner_mouth(shape, landmarks: np.ndarray) -> tuple | None:
    """(box x0, y0, x1, y1 in the picture, the inner-lip outline's mask in that box) of a picture of
    `shape`; None when the outline holds under 20 pixels (no mouth to measure)."""
    lips = np.asarray(landmarks)[INNER_LIPS, :2]
    h, w = shape[:2]
    x0, y0 = np.clip(np.floor(lips.min(0)).astype(int) - 1, 0, [w, h])
    x1, y1 = np.clip(np.ceil(lips.max(0)).astype(int) + 2, 0, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    mask = polygon_mask((y1 - y0, x1 - x0), lips - (x0, y0)) > 0.5
    return ((x0, y0, x1, y1), mask) if mask.sum() >= 20 else None


def teeth_share(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Share of bright, unsaturated pixels (HSV V > 150, S < 90: teeth) inside the inner-lip outline."""
    found = inner_mouth(image.shape, landmarks)
    if found is None:
        return 0.0
    (x0, y0, x1, y1), mask = found
    return float(is_teeth(image[y0:y1, x0:x1])[mask].mean())
