"""`callsynth combine`: the patent's combinations (FIG. 7–9, claims 23–24): the identity of A, the
attributes (background, lighting, hair) of B, the expression of C and the head pose of D, for images or,
frame by frame, videos (§0189). Each of C and D defaults to B."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
from tqdm import tqdm

from receiver.renderer import DEFAULT_MODEL, Renderers

from .face.basis import ExpressionBasis
from .face.code import FaceCoder
from .face.crop import CropBox, box_for_face, full_frame_box
from .face.still import NoFaceError, Still, still_of
from .face.tracker import FaceTracker
from .face.transfer import paste_face
from .media import (
    IMAGE_SUFFIXES,
    VideoWriter,
    has_audio,
    iter_frames,
    mux_audio,
    read_still,
    video_info,
    written_whole,
)

log = logging.getLogger("callsynth.combine")


def _frames(path: Path):
    return [read_still(path)] if path.suffix.lower() in IMAGE_SUFFIXES else iter_frames(path)


def _crop(frame, tracker: FaceTracker, source: str) -> tuple[Still, CropBox]:
    result = tracker.process(frame)
    if not result.found:
        raise NoFaceError(f"{source}: no face found ({result.reason})")
    box = box_for_face(result.landmarks)
    return Still(box.cut(frame), box.to_crop(result.landmarks)), box


def combine(identity: Path, attribute: Path, output: Path, basis: ExpressionBasis, model: str = DEFAULT_MODEL,
            generator: str | None = None, expression: Path | None = None, attribute2: Path | None = None,
            progress: bool = True) -> int:
    """Frames written: an image output gets the first combined frame (of a video B, the first whose picture
    shows a face, said so); a video output every frame of B, with a progress bar, and B's sound.

    Each frame: B's crop (warped to C's expression and D's pose when they are other pictures), A's face
    drawn at the same pose and expression with A's own face shape, as a call draws it, and set into it
    (callsynth.face.transfer); `model` "generator" then repairs it with A's identity vector."""
    a = still_of(identity)
    renderer = Renderers(basis, model, generator, mouth_on_frames=False)(a)     # repairs; renders no frame
    is_video = attribute.suffix.lower() not in IMAGE_SUFFIXES
    single = output.suffix.lower() in IMAGE_SUFFIXES
    sources = {"expression": expression or attribute, "pose": attribute2 or attribute}
    faceless: dict[str, list[int]] = {"attribute": [], "expression": [], "pose": []}
    ended: dict[str, int] = {}
    if expression is not None and expression != attribute and expression.suffix.lower() in IMAGE_SUFFIXES:
        log.warning("%s is a still: an expression is a change from its source's first face, so a still carries "
                    "none and A keeps its own (a video C gives its changes)", expression)
    frames = _combined(renderer, Renderers(basis, "warp"), basis, attribute, sources, is_video,
                       progress and not single, faceless, ended)
    if single:
        # of a video B, the first frame whose picture shows a face: one opening on a title card was refused
        for index, out in enumerate(frames):
            if faceless["attribute"][-1:] != [index]:
                break
        else:
            raise NoFaceError(f"{attribute}: no face found in any frame")
        frames.close()
        if is_video:
            log.warning("%s is a video and %s an image: writing one combined frame only (frame %d, the first "
                        "with a face)", attribute, output, index)
        output.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(output), out[:, :, ::-1]):
            raise ValueError(f"{output}: OpenCV cannot write an image of this kind")
        return 1
    count = 0
    # written beside the output and moved there when whole; with B's sound, the pictures go to a temporary
    # silent video first
    with written_whole(output) as whole:
        silent = whole.with_name(whole.stem + ".silent.mp4") if has_audio(attribute) else whole
        try:
            with VideoWriter(silent, video_info(attribute).fps) as writer:
                for out in frames:
                    writer.write(out)
                    count += 1
            if len(faceless["attribute"]) == count:
                raise NoFaceError(f"{attribute}: no face found in any of its {count} frames")
            if silent != whole:
                mux_audio(silent, attribute, whole)
        finally:
            if silent != whole:
                silent.unlink(missing_ok=True)
    for key, frames_without in faceless.items():
        if frames_without:
            log.warning("%s: no face in %d of %d frames (the first: frame %d); %s", sources.get(key, attribute),
                        len(frames_without), count, frames_without[0],
                        "written as B shows them" if key == "attribute" else f"B kept the {key} before them")
    for key, index in ended.items():
        log.warning("%s ended at frame %d of %d: its last %s holds to the end", sources[key], index, count, key)
    return count


def _combined(renderer, warp_renderers, basis: ExpressionBasis, attribute: Path, sources: dict, is_video: bool,
              progress: bool, faceless: dict[str, list[int]], ended: dict[str, int]):
    """Each combined frame of B, in order (see combine). In a video, a frame of B without a face (a hand
    over it, a turn away) is B's picture as it is, cut where the last face was; a frame of C or D without
    one keeps the expression or pose before it; their indices go to `faceless` (by source) and the rest
    goes on. One such frame ended the whole video before, and nothing was written. A C or D that ends
    before B holds its last expression or pose (the frame goes to `ended`); B's own took over before."""
    # a video C or D keeps step with B; a still's expression and pose hold throughout (taken once, below)
    iters = {k: iter(iter_frames(p)) for k, p in sources.items()
             if p != attribute and p.suffix.lower() not in IMAGE_SUFFIXES}
    faces = {p: still_of(p) for p in set(sources.values())}        # C and D are B unless given
    firsts = {k: faces[p] for k, p in sources.items()}
    coders = {k: FaceCoder(basis, first.landmarks) for k, first in firsts.items()}
    redrawn = any(p != attribute for p in sources.values())
    with FaceTracker(video=is_video, smoothing=False) as tracker, \
            FaceTracker(video=False, smoothing=False) as other_tracker:
        frames = _frames(attribute)
        if is_video:
            frames = tqdm(frames, total=video_info(attribute).frames, desc="combining", unit="frame",
                          disable=not progress)
        last_box = None
        state = {k: coders[k].encode(first.landmarks) for k, first in firsts.items()}    # until a frame says
        for index, frame in enumerate(frames):
            try:
                b, last_box = _crop(frame, tracker, str(attribute))
            except NoFaceError:
                if not is_video:
                    raise
                faceless["attribute"].append(index)
                for key in iters:                   # C and D keep step with B
                    next(iters[key], None)
                yield (last_box or full_frame_box(frame.shape)).cut(frame)
                continue
            for key in sources:
                if key in iters:                    # a video C or D, in step with B
                    source = next(iters[key], None)
                    if source is None:              # shorter than B: its last state holds
                        ended.setdefault(key, index)
                        continue
                elif sources[key] != attribute:
                    continue                        # a still: its first face's state holds
                else:
                    source = None                   # B's own
                try:
                    crop = b if source is None else _crop(source, other_tracker, str(sources[key]))[0]
                except NoFaceError:
                    if not is_video:
                        raise
                    faceless[key].append(index)
                    continue
                state[key] = coders[key].encode(crop.landmarks)
            pose, code = state["pose"][0], state["expression"][1]
            scene, scene_landmarks = b.image, b.landmarks
            if redrawn:          # B drawn with C's expression and D's pose first
                b_renderer = warp_renderers(b)
                scene_landmarks = b_renderer.target_landmarks(pose, code)
                scene = b_renderer.compose(scene_landmarks)
            target = renderer.target_landmarks(pose, code)
            yield renderer.repair(paste_face(renderer.compose(target), target, scene, scene_landmarks),
                                  target, code, pose)
