"""Per-frame fidelity: PSNR, SSIM, and landmark NME (MediaPipe on both frames, % of inter-ocular); and the
face's own signals as ../shared/tools/face_metrics.py defines them: eye openness and blinks, gaze, and
teeth inside the real frame's inner-lip outline on its open-mouth frames; and identity, dlib's 128-d
face-recognition descriptor (its own detector and 5-point alignment, as face_metrics.py)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from ..face.regions import (
    INNER_LIPS,
    OPEN_MOUTH,
    eye_openness,
    gaze,
    lip_gap,
    polygon_mask,
    teeth_share,
)
from ..face.tracker import FaceTracker, inter_ocular
from ..media import iter_frames, iter_timed_frames

_DLIB = None

BLINK_SHARE = 0.6        # a frame blinks when its eye openness is under 60 % of the clip's median


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean 2-D landmark distance over the inter-ocular distance of the truth, in %."""
    err = np.linalg.norm(pred[:, :2] - truth[:, :2], axis=1).mean()
    return float(100 * err / inter_ocular(truth))


class LandmarkStream:
    """One unsmoothed video-mode tracker per stream of frames, so each stream is tracked as a video."""

    def __init__(self, fps: float = 25.0):
        self.tracker = FaceTracker(video=True, smoothing=False, fps=fps)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        return self.tracker.process(frame).landmarks

    def close(self) -> None:
        self.tracker.close()


class FrameLandmarks:
    """MediaPipe on a stream of frames in both modes, each frame giving (video-mode landmarks, image-mode
    landmarks), None where no face: video mode for NME, as a tracker follows a video; image mode for eyes,
    gaze and teeth, as face_metrics.py finds them (video mode's tracking carries lids over from the frame
    before). Both trackers close when the `with` block ends."""

    def __init__(self, fps: float):
        self.video = LandmarkStream(fps)
        self.image = FaceTracker(video=False, smoothing=False)

    def __call__(self, frame: np.ndarray) -> tuple:
        return self.video(frame), self.image.process(frame).landmarks

    def __enter__(self) -> "FrameLandmarks":
        return self

    def __exit__(self, *exc) -> None:
        self.video.close()
        self.image.close()


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def eye_figures(truths: list, outs: list) -> dict:
    """Eye openness r, blink recall and gaze r of a rebuilt clip against the real one (landmark lists, None
    where MediaPipe found no face), as face_metrics.py's `eyes` defines them."""
    pairs = [(t, o) for t, o in zip(truths, outs) if t is not None and o is not None]
    if not pairs:
        return {}
    t_open = np.array([eye_openness(t).mean() for t, _ in pairs])
    o_open = np.array([eye_openness(o).mean() for _, o in pairs])
    blink = t_open < BLINK_SHARE * np.median(t_open)
    shown = o_open < BLINK_SHARE * np.median(o_open)
    return dict(openness_r=_pearson(t_open, o_open), blink_frames=int(blink.sum()),
                blink_recall=float(shown[blink].mean()) if blink.any() else float("nan"),
                gaze_r=_pearson([gaze(t)[0] for t, _ in pairs], [gaze(o)[0] for _, o in pairs]))


def mouth_interior(truth: np.ndarray | None, real: np.ndarray, made: np.ndarray) -> tuple | None:
    """On a real open-mouth frame (landmarks `truth`): (the teeth share inside its inner lips, real and
    made; the mean absolute error there, 0-255), as face_metrics.py's `teeth`; None on other frames."""
    if truth is None or lip_gap(truth) < OPEN_MOUTH:
        return None
    mask = polygon_mask(real.shape, truth[INNER_LIPS]) > 0.5
    if mask.sum() < 20:
        return None
    return (teeth_share(real, truth), teeth_share(made, truth),
            float(np.abs(made[mask].astype(np.float32) - real[mask].astype(np.float32)).mean()))


def mouth_figures(interiors: list) -> dict:
    """The means of mouth_interior's figures over the frames that have them."""
    found = np.array([m for m in interiors if m is not None], dtype=np.float64).reshape(-1, 3)
    mean = lambda k: float(found[:, k].mean()) if len(found) else float("nan")   # noqa: E731
    return dict(open_mouth_frames=len(found), teeth_share_truth=mean(0), teeth_share_out=mean(1),
                interior_l1=mean(2))


def picked_frames(truths: list) -> dict:
    """The frames the eye, mouth and turn figures are about: the deepest blink, the widest mouth and the
    largest head turn (nose tip off the eye midline, over eye distance) of the real clip."""
    valid = [(i, t) for i, t in enumerate(truths) if t is not None]
    if not valid:
        return {}

    def turn(t):
        mid = (t[33, :2] + t[263, :2]) / 2
        return abs(t[1, 0] - mid[0]) / inter_ocular(t)

    return {"deepest blink": min(valid, key=lambda it: eye_openness(it[1]).mean())[0],
            "widest mouth": max(valid, key=lambda it: lip_gap(it[1]))[0],
            "largest turn": max(valid, key=lambda it: turn(it[1]))[0]}


def face_descriptor(rgb: np.ndarray) -> np.ndarray | None:
    """dlib's unit-length descriptor of the largest face in an RGB picture, or None when dlib finds no face;
    the cosine of two is face_metrics.py's identity figure. (The weights are the files face_recognition_models
    installs, found without its pkg_resources import, which fails on current setuptools.)"""
    global _DLIB
    import dlib

    from ..model.identity import weights_path

    if _DLIB is None:
        models = weights_path().parent
        _DLIB = (dlib.get_frontal_face_detector(),
                 dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
                 dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))
    detect, shape, describe = _DLIB
    image = np.ascontiguousarray(rgb)
    boxes = detect(image, 1)
    if not boxes:
        return None
    box = max(boxes, key=lambda r: r.width() * r.height())
    d = np.array(describe.compute_face_descriptor(image, shape(image, box)))
    return d / np.linalg.norm(d)


def mouth_series(video) -> tuple[np.ndarray, np.ndarray]:
    """(presentation time s, lip gap over the iris distance; NaN where MediaPipe finds no face) of every frame
    of a video, MediaPipe in image mode: face_metrics.py's `mouth` series."""
    times, gaps = [], []
    with FaceTracker(video=False, smoothing=False) as tracker:
        for t, frame in iter_timed_frames(video):
            found = tracker.process(frame)
            times.append(t)
            gaps.append(lip_gap(found.landmarks) if found.found else np.nan)
    return np.array(times), np.array(gaps)


def mouth_opening_r(out, truth) -> dict:
    """Pearson r of the mouth opening of a made video (`out`) against the real one, as face_metrics.py's
    `mouth` defines it: the made series resampled by time onto the real frames up to its own last frame,
    over the frames where both show a face (NaN when ten or fewer do). {frames, valid, pearson}."""
    (t_out, made), (t_real, real) = mouth_series(out), mouth_series(truth)
    seen = np.isfinite(made)
    keep = t_real <= t_out[-1]
    t_real, real = t_real[keep], real[keep]
    made = np.interp(t_real, t_out[seen], made[seen]) if seen.any() else np.full(len(t_real), np.nan)
    both = np.isfinite(made) & np.isfinite(real)
    return {"frames": int(len(real)), "valid": int(both.sum()),
            "pearson": _pearson(made[both], real[both]) if both.sum() > 10 else float("nan")}


def open_mouth_teeth(video) -> tuple[int, float]:
    """(open-mouth frames, mean teeth share inside their own inner lips) of a rendered video, as MediaPipe
    tracks it: whether a picture with no truth beside it (a talking face) shows teeth when it opens."""
    shares = []
    with FaceTracker(video=False, smoothing=False) as tracker:
        for frame in iter_frames(video):
            found = tracker.process(frame)
            if found.found and lip_gap(found.landmarks) >= OPEN_MOUTH:
                shares.append(teeth_share(frame, found.landmarks))
    return len(shares), float(np.mean(shares)) if shares else 0.0
