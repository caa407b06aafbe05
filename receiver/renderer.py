"""The receiver's frame builder: (pose, expression) → target landmarks → the still warped to them, with
the mouth and eyes blended from the reference stills (callsynth.face.reference_blend)."""

from __future__ import annotations

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import FaceCoder
from callsynth.face.pose import Pose
from callsynth.face.reference_blend import ReferenceBlender
from callsynth.face.still import Still
from callsynth.face.warp import FaceWarper


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

    def compose(self, target: np.ndarray) -> np.ndarray:
        """The still warped to the target landmarks, mouth and eyes from the references."""
        return self.blender.compose(self.warper.warp(target), target)

    @property
    def rest_pose(self) -> Pose:
        return self.coder.still_pose

    def target_landmarks(self, pose: Pose, code: np.ndarray) -> np.ndarray:
        return self.coder.landmarks(pose, code)

    def render(self, state: tuple[Pose, np.ndarray] | None, repair: bool = False) -> np.ndarray:
        """A frame for (pose, expression); the still itself when nothing has arrived yet. (`repair` is
        the generator's; the warp has nothing to repair with.)"""
        if state is None:
            return self.still.image.copy()
        return self.compose(self.target_landmarks(*state))


# How frames are rebuilt unless told otherwise (reenact, receive, demo, the Receiver): the generator, which
# beats the warp alone on SSIM, mouth-region error and landmark NME on the validation identities.
DEFAULT_MODEL = "generator"


def renderer_factory(model: str = DEFAULT_MODEL, generator=None):
    """What builds a receiver's renderer from (basis, still): the warp, or (model "generator") the warp
    repaired by the generator file `generator` (None: the shipped one)."""
    if model == "warp":
        return WarpRenderer
    from .generator_renderer import GeneratorRenderer

    return lambda basis, still: GeneratorRenderer(basis, still, generator)
