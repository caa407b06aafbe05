"""`callsynth audio2exp`: a talking face from a still and a sound file, offline, with the sound in the MP4.

It lives above both audio2exp (speech → code) and the receiver (code → picture, recording), so that
neither package imports the other's way."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from audio2exp.driver import SpeechDriver
from audio2exp.features import SAMPLE_RATE, load_audio, silent
from audio2exp.model import Audio2ExpModel
from audio2exp.stream import sound_kinds
from receiver.recorder import CallRecorder
from receiver.renderer import Renderers

from .call_options import CALL
from .face.basis import ExpressionBasis
from .face.still import Still
from .media import written_whole

log = logging.getLogger("callsynth.audio2exp")

# dlib's identity cosine (face_metrics.py's figure) between two pictures of one person: 0.96-1.00 for the
# neutral and smiling pictures of 30 people of images/london_*, at most 0.93 between any two of them
# (python scripts/speech_face_figures.py)
SAME_PERSON = 0.94


def check_references(still: Still, references: list[Still], sources: list[str]) -> None:
    """Warn for each reference that looks like another person than the still: its mouth and eyes would be
    pasted on this face."""
    from .eval.metrics import face_descriptor

    own = face_descriptor(still.image)
    for reference, source in zip(references, sources):
        theirs = face_descriptor(reference.image)
        if own is not None and theirs is not None and float(own @ theirs) < SAME_PERSON:
            log.warning("%s looks like another person than the still (identity cosine %.2f, one person "
                        "gives >= %.2f): its mouth and eyes will be drawn on this face", source,
                        float(own @ theirs), SAME_PERSON)


def render_talking_face(audio_path: Path, still: Still, basis: ExpressionBasis, model: Audio2ExpModel,
                        output: Path, fps: float = CALL.display_fps, progress: bool = True,
                        references: list[Still] = ()) -> dict:
    """`references`: more stills of the same person (an open mouth with teeth, closed eyes), from which
    the renderer draws the open mouth's interior and the eyes, as a call's receiver does with the reference
    stills its sender collects; without them an open mouth is the still's closed lips stretched."""
    samples = load_audio(audio_path)            # MediaError for empty or undecodable audio
    quiet = silent(samples)
    if quiet:
        log.warning("%s: the sound is silent (digital zero or nearly): the mouth stays closed, with blinks "
                    "and sway only", audio_path)
    kinds = sound_kinds(model, samples, fps)
    if not quiet and kinds["voice_share"] > 0.2 and kinds["speech_share"] < 0.5:
        log.warning("%s: only %.0f%% of the loud part sounds like speech (music or noise?): the mouth rests "
                    "where it does not", audio_path, 100 * kinds["speech_share"])
    renderer = Renderers(basis, "warp")(still)
    for index, reference in enumerate(references, start=1):
        renderer.add_reference(index, reference)
    driver = SpeechDriver(model, renderer.rest_pose, fps)
    states = driver.offline(samples)
    with written_whole(output) as partial:
        recorder = CallRecorder(partial, 0.0, with_audio=True, fps=fps)
        try:
            for t, pose, code in tqdm(states, desc="rendering", unit="frame", disable=not progress):
                recorder.add_video(renderer.render((pose, code)), t)
            chunk = SAMPLE_RATE // 50
            for i in range(0, len(samples), chunk):
                piece = samples[i:i + chunk]
                frame = av.AudioFrame.from_ndarray(piece[None, :].astype(np.float32), format="flt",
                                                   layout="mono")
                frame.sample_rate = SAMPLE_RATE
                recorder.add_audio(frame, i / SAMPLE_RATE)
        finally:
            recorder.close()
    return {"frames": len(states), "seconds": round(len(samples) / SAMPLE_RATE, 3), "fps": fps,
            "silent": quiet, **kinds, "references": len(references), "output": str(output)}


def rendered_mouth(clip: Path, basis: ExpressionBasis, model: Audio2ExpModel, folder: Path) -> dict:
    """What the evaluator measures of audio2exp on a held-out clip: the talking face rendered from the clip's
    first frame and its own sound (`callsynth audio2exp`), into `folder`, and the Pearson r of its mouth
    opening against the clip's real video (eval.metrics.mouth_opening_r, face_metrics.py's `mouth`). The
    code-space figure of audio2exp.evaluate leaves out what the drawing loses: the warp, MediaPipe reading
    the drawn lips back, the frames' timestamps."""
    from .eval.metrics import mouth_opening_r
    from .face.still import prepare_still
    from .media import read_still

    clip = Path(clip)
    still = prepare_still(read_still(clip), source=str(clip))
    output = Path(folder) / f"{clip.parent.name}_{clip.stem}.mp4"
    render_talking_face(clip, still, basis, model, output, progress=False)
    return {"rendered": str(output), **mouth_opening_r(output, clip)}


def add_rendered(report: dict, basis: ExpressionBasis, model: Audio2ExpModel, folder: Path) -> None:
    """To an audio2exp.evaluate report: beside each clip's code-space Pearson, the rendered one
    (rendered_mouth), and each group's mean of it. A clip whose first frame shows no face is said and left
    out of the means."""
    from audio2exp.evaluate import clip_groups

    from .media import MediaError

    for row in tqdm(report["per_clip"], desc="rendering talking faces"):
        try:
            row["rendered_pearson"] = rendered_mouth(Path(row["clip"]), basis, model, folder)["pearson"]
        except (MediaError, ValueError) as exc:      # a first frame without a face, a clip that cannot be read
            log.warning("not rendered: %s", exc)
    for name, rows in clip_groups(report["per_clip"]).items():
        done = [r["rendered_pearson"] for r in rows if "rendered_pearson" in r]
        if done and name in report["summary"]:
            report["summary"][name]["rendered_pearson_mean"] = float(np.mean(done))
