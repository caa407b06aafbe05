"""The receiver's frame builder: (pose, expression) → target landmarks → the still warped to them, with
the mouth and eyes blended from the reference stills (callsynth.face.reference_blend)."""

from __future__ import annotations

import logging

import numpy as np

from callsynth.call_options import CALL, MODELS
from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import NO_CUE, FaceCoder, MouthCue
from callsynth.face.pose import Pose
from callsynth.face.reference_blend import ReferenceBlender
from callsynth.face.still import Still
from callsynth.face.warp import FaceWarper


# How far the irises are drawn per unit of gaze sent. The warp moves an iris's pixels with its landmarks, but
# MediaPipe, the tracker the evaluator reads gaze with, reads a fifth of that move back from the drawn eye
# (the lids and the bulge of the cornea, which follow a real eye's turn, stay as the still has them): the
# drawn eyes moved mostly with the tracker's jitter. At 2 it reads back about half the gaze sent
# (tests/test_references.py), and the drawn gaze follows the real one better (README "Irises drawn twice as far").
DRAWN_GAZE = 2.0


class WarpRenderer:
    """Non-neural renderer: piecewise-affine warp of the still (the generator's attribute image)."""

    def __init__(self, basis: ExpressionBasis, still: Still):
        self.still = still
        self.coder = FaceCoder(basis, still.landmarks)
        self.warper = FaceWarper(still.image, still.landmarks)
        self.blender = ReferenceBlender(still)

    def add_reference(self, index: int, still: Still) -> None:
        """Cache reference still `index` (replacing the one before it); used from the next frame on."""
        self.blender.add(index, still)

    def held_references(self) -> dict:
        """The reference stills cached so far, by index (for a sharper copy of the still to go on with)."""
        return {index: reference.still for index, reference in self.blender.references.items()}

    def compose(self, target: np.ndarray, cue: MouthCue = NO_CUE) -> np.ndarray:
        """The still warped to the target landmarks, mouth and eyes from the references (the mouth from
        the picture the sender's cue names, if it names one held, and its interior code added)."""
        return self.blender.compose(self.warper.warp(target), target, cue)

    def layers(self, target: np.ndarray, cue: MouthCue = NO_CUE) -> tuple[np.ndarray, np.ndarray]:
        """(the still's warp to `target`, the frame composed on a copy of it with the references' mouth and
        eyes)."""
        base = self.warper.warp(target)
        return base, self.blender.compose(base.copy(), target, cue)

    @property
    def rest_pose(self) -> Pose:
        return self.coder.still_pose

    def target_landmarks(self, pose: Pose, code: np.ndarray) -> np.ndarray:
        """The landmarks a frame is drawn to: the code's, the irises moved DRAWN_GAZE times the gaze sent."""
        return self.coder.landmarks(pose, code, DRAWN_GAZE)

    def repair(self, picture: np.ndarray, target: np.ndarray, code: np.ndarray, pose: Pose) -> np.ndarray:
        """The warp has nothing to repair with: the picture as it is (the generator's renderer repairs)."""
        return picture

    def render(self, state: tuple[Pose, np.ndarray] | None, repair: bool = False) -> np.ndarray:
        """A frame for (pose, expression); the still itself when nothing has arrived yet. (`repair` is
        the generator's; the warp has nothing to repair with.)"""
        if state is None:
            return self.still.image.copy()
        pose, expression = state
        return self.compose(self.target_landmarks(pose, expression), self.coder.mouth_cue(expression))


log = logging.getLogger("callsynth.receive")

DEFAULT_MODEL = CALL.model          # (callsynth.call_options, where the command line reads it too)


def _mouth(basis: ExpressionBasis, path=None) -> tuple:
    """The mouth generator of a file (default the shipped one) and the way it runs (ONNX Runtime, one
    thread: callsynth.model.runtime.onnx_mouth)."""
    from callsynth.model.runtime import load_mouth_generator, onnx_mouth

    net = load_mouth_generator(path, basis)
    return net, onnx_mouth(net)


def frames_mouth(basis: ExpressionBasis, path=None) -> tuple | None:
    """The mouth generator (`path`, default the shipped one) and its run for the frames under the
    full-frame generator; None, said, when that file cannot be used: the repaired still's warp alone."""
    from callsynth.model.runtime import GeneratorModelError

    try:
        return _mouth(basis, path)
    except GeneratorModelError as exc:
        log.warning("no mouth generator for the frames (the repaired still's warp alone): %s", exc)
        return None


def mouth_renderers(basis: ExpressionBasis, path=None) -> Renderers:
    """The call's frame renderers under the full-frame generator (which repairs the still in a process of
    its own, receiver/still_repairer.py): the warp of the (repaired) still with its mouth repaired by the
    mouth generator (`path`, default the shipped one); the warp alone, said, when that file cannot be used."""
    mouth = frames_mouth(basis, path)
    return Renderers(basis, "warp") if mouth is None else Renderers(basis, "mouth", loaded=mouth)


class Renderers:
    """The one way every command builds its renderers (receive, call, reenact, eval, bench, combine): the
    model is chosen once — the warp, or the warp repaired by the generator, whose network is loaded once
    (a bad file is refused here, before any frame) and exported once to ONNX Runtime when `compiled`, on
    torch's thread count then — then one renderer per still, as stills arrive. The call's still repairer
    runs the generator eager (`compiled=False`): a TorchScript trace of it cost 70 MB more peak memory, and
    it repairs only as often as the machine affords.
    Under the full-frame generator the frames are built as a call builds them (receiver/frame_clock.py): the
    warp of the repaired still with its mouth repaired by the mouth generator (`mouth_on_frames`: False for
    the still repairer, which shows no frame; repair_every=1 shows the generator's own frames). `loaded`:
    the mouth generator and its run already loaded (frames_mouth), for model "mouth"."""

    def __init__(self, basis: ExpressionBasis, model: str = DEFAULT_MODEL, generator=None, compiled: bool = True,
                 repair_every: int = CALL.repair_still_every, mouth_on_frames: bool = True, loaded=None):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
        self.basis, self.model, self.compiled, self.repair_every = basis, model, compiled, repair_every
        self.loaded = self.run = self.mouth = None
        if model == "generator":
            from callsynth.model.runtime import load_generator

            self.loaded = load_generator(generator, basis)
            self.mouth = frames_mouth(basis) if mouth_on_frames and repair_every > 1 else None
        elif model == "mouth":
            self.loaded, self.run = loaded or _mouth(basis, generator)

    @property
    def repairs(self) -> bool:
        """Whether the renderers it makes repair frames (the generator) or only warp."""
        return self.loaded is not None

    def __call__(self, still: Still) -> WarpRenderer:
        if self.loaded is None:
            return WarpRenderer(self.basis, still)
        if self.model == "mouth":
            from .generator_renderer import MouthRenderer

            return MouthRenderer(self.basis, still, self.loaded, self.run)
        import torch

        from callsynth.model.repairer import FullFrame
        from callsynth.model.runtime import onnx_full_frame

        from .generator_renderer import GeneratorRenderer

        if self.run is None:
            self.run = onnx_full_frame(self.loaded[0], still.image.shape[0], torch.get_num_threads()) \
                if self.compiled else FullFrame(self.loaded[0]).eval()
        return GeneratorRenderer(self.basis, still, loaded=self.loaded, run=self.run,
                                 every=self.repair_every, mouth=self.mouth)
