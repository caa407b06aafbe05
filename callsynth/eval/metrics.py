"""Per-frame fidelity: PSNR, SSIM, and landmark NME (MediaPipe on both frames, % of inter-ocular)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from ..face.tracker import FaceTracker, inter_ocular


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
