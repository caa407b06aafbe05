"""The receiver's neural renderers: the warp of the still repaired whole by the trained full-frame MC-AAD
generator, or its mouth repaired by the mouth generator (callsynth.model.runtime runs both). `reenact` and
`eval` run the full-frame one traced with TorchScript, the fastest way `callsynth bench` measured; the call's
receiver runs it eager, which costs less memory (see receiver/call.py). The mouth generator is small and
always traced."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.mouth_patch import MouthPatch
from callsynth.face.still import Still
from callsynth.model.mouth_generator import references_present
from callsynth.model.repairer import CallGenerator
from callsynth.model.runtime import identity_of, load_generator, mouth_repaired, repaired, traced

from .renderer import WarpRenderer


def mouth_frame(renderer: WarpRenderer, net, run, state) -> np.ndarray:
    """The frame of `state` by `renderer`'s warp and reference blend, its mouth repaired by the mouth
    generator `net` (run as `run`) with the references `renderer` holds."""
    pose, code = state
    target = renderer.target_landmarks(pose, code)
    base = renderer.warper.warp(target)
    patch = MouthPatch.at(target, base.shape[0])
    return mouth_repaired(run, net.code_dim, renderer.blender.compose(base, target), patch.cut(base), patch,
                          target, code, pose, references_present(renderer.blender.references))


def keep_blink(repaired: np.ndarray, composed: np.ndarray, closing: np.ndarray | None) -> np.ndarray:
    """The full-frame generator's frame with a closing eye left as the reference blend drew it (`closing`:
    ReferenceBlender.closing_eyes). The generator was trained before there were closed-eye pictures to
    blend; its repair of a blink made the evaluator's tool miss one of 24 blink frames on a validation
    person that the warp showed (README)."""
    if closing is None:
        return repaired
    keep = closing[..., None]
    return np.clip(repaired * (1 - keep) + composed * keep + 0.5, 0, 255).astype(np.uint8)


class GeneratorRenderer(WarpRenderer):
    def __init__(self, basis: ExpressionBasis, still: Still, model: str | Path | None = None,
                 script: bool = True, loaded: tuple[CallGenerator, int] | None = None, run=None,
                 mouth: tuple | None = None):
        """`model`: a generator file (default the shipped one), or `loaded`: what load_generator gave;
        `run`: that network already traced (receiver.renderer.Renderers passes both); `mouth`: the mouth
        generator and its traced run, for the frames the full-frame one cannot afford
        (`render(state, "mouth")`). Torch's thread count is the caller's (the Receiver's `threads`, the
        bench's loop)."""
        super().__init__(basis, still)
        self.net, self.size = loaded or load_generator(model, basis)
        self.z_id = identity_of(still.image, still.landmarks, self.size)  # cached once
        self.run = run or (traced(self.net, still.image.shape[0]) if script else None)
        self.mouth = mouth

    def repair(self, picture: np.ndarray, target: np.ndarray, code: np.ndarray, pose) -> np.ndarray:
        """`picture` (the warp, or any picture of this still's face at `target`) repaired by the generator
        with the still's identity vector."""
        return repaired(self.net, picture, target, self.z_id, code[:self.net.code_dim], pose, self.run)

    def render(self, state, repair: bool | str = True) -> np.ndarray:
        """The repaired frame; the warp alone with repair=False, its mouth repaired by the mouth generator
        with repair="mouth" (the receiver's lower quality steps; the warp alone when it has none)."""
        if state is None or not repair:
            return super().render(state)
        if repair == "mouth":
            return mouth_frame(self, *self.mouth, state) if self.mouth else super().render(state)
        pose, code = state
        target = self.target_landmarks(pose, code)
        composed = self.compose(target)
        out = self.repair(composed, target, code, pose)
        return keep_blink(out, composed, self.blender.closing_eyes(target, composed.shape[0]))


class MouthRenderer(WarpRenderer):
    """The warp with its reference blend, then the mouth repaired by the mouth generator (multi-attribute
    MC-AAD on the mouth's own small picture, callsynth/model/mouth_generator.py): the composed frame's
    mouth and the still's own warped mouth are its attribute images."""

    def __init__(self, basis: ExpressionBasis, still: Still, net, run=None):
        super().__init__(basis, still)
        self.net, self.run = net, run or net

    def repair(self, picture: np.ndarray, target: np.ndarray, code: np.ndarray, pose) -> np.ndarray:
        """Any picture of this face at `target` (combine's transfer) repaired, itself as the plain source."""
        patch = MouthPatch.at(target, picture.shape[0])
        return mouth_repaired(self.run, self.net.code_dim, picture, patch.cut(picture), patch, target, code,
                              pose, references_present(self.blender.references))

    def render(self, state, repair: bool = True) -> np.ndarray:
        """The repaired frame; the warp alone with repair=False (the receiver's lower quality steps)."""
        if state is None or not repair:
            return super().render(state)
        return mouth_frame(self, self.net, self.run, state)
