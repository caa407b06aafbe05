"""Fitting the interior codebook (face/interior_code.py) on the mouth generator's samples.

Each sample of train/mouth_pairs.py is a frame of a training clip sent and drawn as a call draws it: the
real frame's mouth patch and the drawn frame's (before its interior code), cut at the packet's landmarks.
Where the receiver draws the mouth open (reference_blend.gap_weight above 0, what the sender codes), the
residual (grey, real minus drawn, inside the grown inner lips) is a training point; k-means (OpenCV's,
seeded) finds CODES - 1 centres for the first stage, then for the second on what the first leaves, and each
stage's entry 0 stays zero. `callsynth fit-interior` fits it on train-mouth's training part (not the
selection people, who choose the mouth generator's kept step, nor the validation people); `measure`
reports what the codebook does to a set of samples (theirs, for the log).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face.interior_code import CODES, STAGES, InteriorCodebook, grey, region
from ..face.reference_blend import gap_weight
from ..face.regions import OPEN_MOUTH

ATTEMPTS = 2
ITERATIONS = 30


def residuals(arrays: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(residuals, weights, which samples) of the samples whose mouth the receiver draws open."""
    coded = np.flatnonzero(gap_weight(arrays["gap"]) > 0)
    weights = np.stack([region(arrays["inner"][i].astype(np.float32) / 255) for i in coded])
    res = grey(arrays["truth"][coded]) - grey(arrays["drawn"][coded])
    return res, weights, coded


def fit_codebook(arrays: dict, seed: int = 0, log=print) -> InteriorCodebook:
    """A codebook from training samples (build_mouth_pairs' arrays): each stage fitted on what the stages
    before it leave."""
    res, weights, coded = residuals(arrays)
    if len(coded) < 4 * CODES:
        raise ValueError(f"interior codebook: {len(coded)} open-mouth samples, need {4 * CODES} or more")
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, ITERATIONS, 0.1)
    entries = np.zeros((STAGES, CODES) + res.shape[1:], np.float32)
    for stage in range(STAGES):
        log(f"interior codebook, stage {stage + 1} of {STAGES}: k-means of {len(coded)} open-mouth residuals "
            f"into {CODES - 1} entries")
        data = (res * weights).reshape(len(coded), -1).astype(np.float32)
        _, _, centres = cv2.kmeans(data, CODES - 1, None, criteria, ATTEMPTS, cv2.KMEANS_PP_CENTERS)
        entries[stage, 1:] = np.clip(centres.reshape((-1,) + res.shape[1:]), -255, 255)
        book = InteriorCodebook(entries)
        if stage + 1 < STAGES:            # what this stage leaves, for the next
            res = np.stack([r - book.entries[stage, book.nearest_entry(stage, r, w)] for r, w in zip(res, weights)])
    return book


def measure(codebook: InteriorCodebook, arrays: dict) -> dict:
    """On the open-mouth samples (lip gap >= OPEN_MOUTH, the evaluator's): the mean absolute error (0-255)
    inside the inner lips of the drawn patch and of the drawn patch with its code added, and the
    share of samples whose code is not 0."""
    open_ = np.flatnonzero(arrays["gap"] >= OPEN_MOUTH)
    before, after, coded = [], [], 0
    for i in open_:
        drawn, truth = arrays["drawn"][i].astype(np.float32), arrays["truth"][i].astype(np.float32)
        inner = arrays["inner"][i].astype(np.float32) / 255
        weight = region(inner)
        index = codebook.nearest(grey(truth) - grey(drawn), weight)
        coded += index > 0
        painted = np.clip(drawn + codebook.repair(index, weight), 0, 255)
        inside = inner > 0.5
        if inside.any():
            before.append(np.abs(drawn - truth)[inside].mean())
            after.append(np.abs(painted - truth)[inside].mean())
    return dict(samples=len(open_), interior_before=float(np.mean(before)), interior_after=float(np.mean(after)),
                coded_share=coded / max(1, len(open_)))
