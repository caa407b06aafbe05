"""Training and evaluation data for audio2exp: per clip, the log-mel frames of its audio and, per video
frame, the mouth code measured on the video (landmarks from the shared landmark cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from callsynth.face.basis import ExpressionBasis
from callsynth.face.landmark_cache import track_many
from callsynth.media import MediaError
from callsynth.tool_options import TOOLS

from .features import load_audio, log_mel, silent
from .targets import (EYES, MOUTH, canonical_frames, eye_aperture, lip_gap, mouth_codes, region_projector,
                      rest_frame)


@dataclass
class Clip:
    path: str
    mel: np.ndarray          # (F, N_MELS) log-mel, 100 frames a second
    fps: float
    codes: np.ndarray        # (T, K) mouth code of each video frame, relative to `reference`
    valid: np.ndarray        # (T,) the tracker found the face
    reference: np.ndarray    # (478, 3) canonical face of the clip's most closed-mouth frame
    gaps: np.ndarray         # (T,) true lip gap (over inter-ocular)
    eye_codes: np.ndarray    # (T, K) eye part of each code (for the blink direction)
    eyes_open: np.ndarray    # (T,) eye aperture


class SilentTrack(ValueError):
    """A clip whose sound is digital zero throughout while the face talks (four clips of ../shared/data,
    marked as having audio): nothing to learn from or to measure on. Trained on, they paired a talking
    mouth with no sound at all."""


def build_clip(path: Path, landmarks: np.ndarray, fps: float, basis: ExpressionBasis) -> Clip | None:
    """The clip's features and mouth codes; None without audio or with under 10 tracked frames;
    SilentTrack when its sound is silence throughout."""
    try:
        audio = load_audio(path)
    except MediaError:
        return None
    if silent(audio):
        raise SilentTrack(f"{path}: the sound is digital zero throughout")
    canonical = canonical_frames(landmarks, basis)
    valid = np.isfinite(canonical).all(axis=(1, 2))
    if valid.sum() < 10:
        return None
    reference = canonical[rest_frame(canonical)]
    filled = np.where(valid[:, None, None], canonical, reference)
    codes = mouth_codes(filled, reference, region_projector(basis, MOUTH))
    eye_proj = region_projector(basis, EYES)
    eye_codes = (filled - reference)[:, EYES, :].reshape(len(filled), -1) @ eye_proj.T
    return Clip(str(path), log_mel(audio), fps, codes.astype(np.float32), valid, reference,
                np.where(valid, lip_gap(filled), np.nan), eye_codes.astype(np.float32),
                np.where(valid, eye_aperture(filled), np.nan))


def build_dataset(paths: list[Path], basis: ExpressionBasis, workers: int = TOOLS.workers, log=print) -> list[Clip]:
    """The clips that have sound and a tracked face; those whose sound is silence throughout are left
    out and named."""
    tracked = track_many(paths, workers=workers, desc="landmarks")
    clips, quiet = [], []
    for path in tqdm(paths, desc="audio and codes"):
        item = tracked.get(str(path))
        if item is None:
            continue
        try:
            clip = build_clip(Path(path), item["landmarks"], item["fps"], basis)
        except SilentTrack:
            quiet.append(Path(path))
            continue
        if clip is not None:
            clips.append(clip)
    if quiet:
        log(f"left out {len(quiet)} clips whose sound is digital zero throughout: "
            + ", ".join(f"{p.parent.name}/{p.name}" for p in quiet))
    return clips


def blink_direction(clips: list[Clip]) -> np.ndarray:
    """Mean eye code of blink frames minus that of open-eye frames, over clips: a closed-eyes code."""
    diffs = []
    for clip in clips:
        aperture = clip.eyes_open
        ok = np.isfinite(aperture)
        if ok.sum() < 20:
            continue
        median = np.nanmedian(aperture)
        shut = ok & (aperture < 0.45 * median)
        open_ = ok & (aperture > 0.9 * median)
        if shut.sum() >= 1 and open_.sum() >= 5:
            diffs.append(clip.eye_codes[shut].mean(0) - clip.eye_codes[open_].mean(0))
    if not diffs:
        raise ValueError("no blinks found in the training clips")
    return np.median(np.stack(diffs), axis=0).astype(np.float32)
