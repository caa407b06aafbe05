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
