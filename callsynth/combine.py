"""`callsynth combine`: the patent's combinations (FIG. 7–9, claims 23–24): the identity of A, the
attributes (background, lighting, hair) of B, the expression of C and the head pose of D, for images or,
frame by frame, videos (§0189). Each of C and D defaults to B."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import cv2
from tqdm import tqdm

from .face.basis import ExpressionBasis
from .face.code import FaceCoder
from .face.crop import box_for_face
from .face.still import NoFaceError, Still, prepare_still
from .face.tracker import FaceTracker
from .media import (
    IMAGE_SUFFIXES,
    VideoWriter,
    has_audio,
    iter_frames,
    mux_audio,
    read_still,
    video_info,
)

log = logging.getLogger("callsynth.combine")


def _frames(path: Path):
    return [read_still(path)] if path.suffix.lower() in IMAGE_SUFFIXES else iter_frames(path)


def _crop(frame, tracker: FaceTracker, source: str) -> Still:
    result = tracker.process(frame)
    if not result.found:
        raise NoFaceError(f"{source}: no face found ({result.reason})")
    box = box_for_face(result.landmarks)
    return Still(box.cut(frame), box.to_crop(result.landmarks))


def combine(identity: Path, attribute: Path, output: Path, basis: ExpressionBasis, generator: str | None,
            expression: Path | None = None, attribute2: Path | None = None, progress: bool = True) -> int:
    """Frames written: an image output gets the first combined frame (of a video B, said so); a video
    output every frame of B, with a progress bar, and B's sound."""
    from .model.runtime import identity_of, load_generator, repaired

    net, size = load_generator(generator, basis)
    a = prepare_still(read_still(identity), source=str(identity))
    z_id = identity_of(a.image, a.landmarks, size)
    is_video = attribute.suffix.lower() not in IMAGE_SUFFIXES
    image_out = output.suffix.lower() in IMAGE_SUFFIXES
    if is_video and image_out:
        log.warning("%s is a video and %s an image: writing the first combined frame only", attribute, output)
    silent_video = None
    if is_video and not image_out:
        handle, silent_video = tempfile.mkstemp(suffix=".mp4", dir=output.parent if output.parent.exists() else None)
        os.close(handle)
    writer = VideoWriter(silent_video, video_info(attribute).fps) if silent_video else None
    sources = {"expression": expression or attribute, "pose": attribute2 or attribute}
    iters = {k: iter(_frames(p)) for k, p in sources.items()}
    coders = {k: FaceCoder(basis, prepare_still(read_still(p), source=str(p)).landmarks)
              for k, p in sources.items()}
    count = 0
    with FaceTracker(video=is_video, smoothing=False) as tracker, \
            FaceTracker(video=False, smoothing=False) as other_tracker:
        frames = _frames(attribute)
        if writer:
            frames = tqdm(frames, total=video_info(attribute).frames, desc="combining", unit="frame",
                          disable=not progress)
        for frame in frames:
            b = _crop(frame, tracker, str(attribute))
            state = {}
            for key, it in iters.items():
                source = next(it, None)
                crop = b if source is None or sources[key] == attribute else _crop(
                    source, other_tracker, str(sources[key]))
                state[key] = coders[key].encode(crop.landmarks)
            out = repaired(net, b.image, b.landmarks, z_id, state["expression"][1], state["pose"][0])
            count += 1
            if writer:
                writer.write(out)
                continue
            output.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(output), out[:, :, ::-1]):
                raise ValueError(f"{output}: OpenCV cannot write an image of this kind")
            break
    if writer:
        writer.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            if has_audio(attribute):
                mux_audio(silent_video, attribute, output)
            else:
                os.replace(silent_video, output)
        finally:
            if os.path.exists(silent_video):
                os.remove(silent_video)
    return count
