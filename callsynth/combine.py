"""`callsynth combine`: the patent's combinations (FIG. 7–9, claims 23–24): the identity of A, the
attributes (background, lighting, hair) of B, the expression of C and the head pose of D, for images or,
frame by frame, videos (§0189). Each of C and D defaults to B."""

from __future__ import annotations

from pathlib import Path

import cv2

from .face.basis import ExpressionBasis
from .face.code import FaceCoder
from .face.crop import box_for_face
from .face.still import NoFaceError, Still, prepare_still
from .face.tracker import FaceTracker
from .media import IMAGE_SUFFIXES, VideoWriter, iter_frames, read_still, video_info


def _frames(path: Path):
    return [read_still(path)] if path.suffix.lower() in IMAGE_SUFFIXES else iter_frames(path)


def _crop(frame, tracker: FaceTracker, source: str) -> Still:
    result = tracker.process(frame)
    if not result.found:
        raise NoFaceError(f"{source}: no face found ({result.reason})")
    box = box_for_face(result.landmarks)
    return Still(box.cut(frame), box.to_crop(result.landmarks))


def combine(identity: Path, attribute: Path, output: Path, basis: ExpressionBasis, generator: str | None,
            expression: Path | None = None, attribute2: Path | None = None) -> int:
    from receiver.generator_renderer import identity_of, load_generator, repaired

    net, size = load_generator(generator, basis)
    a = prepare_still(read_still(identity), source=str(identity))
    z_id = identity_of(a.image, a.landmarks, size)
    is_video = attribute.suffix.lower() not in IMAGE_SUFFIXES
    writer = VideoWriter(output, video_info(attribute).fps) if is_video else None
    sources = {"expression": expression or attribute, "pose": attribute2 or attribute}
    iters = {k: iter(_frames(p)) for k, p in sources.items()}
    coders = {k: FaceCoder(basis, prepare_still(read_still(p), source=str(p)).landmarks)
              for k, p in sources.items()}
    count = 0
    with FaceTracker(video=is_video, smoothing=False) as tracker, \
            FaceTracker(video=False, smoothing=False) as other_tracker:
        for frame in _frames(attribute):
            b = _crop(frame, tracker, str(attribute))
            state = {}
            for key, it in iters.items():
                source = next(it, None)
                crop = b if source is None or sources[key] == attribute else _crop(
                    source, other_tracker, str(sources[key]))
                state[key] = coders[key].encode(crop.landmarks)
            out = repaired(net, b.image, b.landmarks, z_id, state["expression"][1], state["pose"][0])
            if writer:
                writer.write(out)
            else:
                output.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(output), out[:, :, ::-1])
            count += 1
    if writer:
        writer.close()
    return count
