"""The receiver's neural renderers: the warp of the still repaired whole by the trained full-frame MC-AAD
generator, or its mouth repaired by the mouth generator (callsynth.model.runtime runs both). `reenact` and
`eval` run the full-frame one by ONNX Runtime, the fastest way `callsynth bench` measured; the call's
still repairer runs it eager, which costs less memory (receiver/still_repairer.py). The mouth generator is
small and always runs by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.face.mouth_patch import MouthPatch
from callsynth.face.reference_blend import eyes_mask
from callsynth.face.still import Still
from callsynth.face.warp import remap, splat_back
from callsynth.model.mouth_generator import references_present
from callsynth.model.repairer import CallGenerator
from callsynth.model.runtime import identity_of, load_generator, mouth_repaired, repaired

from .renderer import WarpRenderer


def mouth_frame(renderer: WarpRenderer, net, run, state) -> np.ndarray:
    """The frame of `state` by `renderer`'s warp and reference blend, its mouth repaired by the mouth
    generator `net` (run as `run`) with the references `renderer` holds."""
    pose, code = state
    target = renderer.target_landmarks(pose, code)
    base, composed = renderer.layers(target, renderer.coder.mouth_cue(code))
    patch = MouthPatch.at(target, base.shape[0])
    return mouth_repaired(run, net.code_dim, composed, patch.cut(base), patch, target, code, pose,
                          references_present(renderer.blender.references))


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
    """The full-frame generator's renderer. Its generator repairs the *still*: on every `every`-th frame
    it repairs that frame (the warp of the plain still, as it was trained) and the repair is carried back
    onto the still's own pixels through that frame's warp (face.warp.splat_back); every frame is the warp of
    that repaired still, at the warp's cost, as in a call, whose still is repaired in a process of its own,
    with its mouth repaired by the mouth generator when `mouth` = (network, its run) is given. On the seven
    evaluation clips it kept most of the per-frame generator's SSIM gain (README "When the machine is
    slow"), where repairing every frame cost 7-13x the warp in `callsynth bench`. `every=1`: the generator
    repairs every frame itself and that is the frame."""

    def __init__(self, basis: ExpressionBasis, still: Still, model: str | Path | None = None,
                 loaded: tuple[CallGenerator, int] | None = None, run=None,
                 every: int = CALL.repair_still_every, mouth: tuple | None = None):
        """`model`: a generator file (default the shipped one), or `loaded`: what load_generator gave;
        `run`: that network as it runs (by ONNX Runtime: receiver.renderer.Renderers passes both; None:
        eager, on the caller's torch thread count); `every`: repair the still on every `every`-th frame
        rendered (a call's still repairer calls repair_still itself)."""
        super().__init__(basis, still)
        self.net, self.size = loaded or load_generator(model, basis)
        self.z_id = identity_of(still.image, still.landmarks, self.size)  # cached once
        self.run = run
        self.every, self.frames = max(1, int(every)), 0
        self.plain = self.warper.still          # the generator's input is always this still's warp
        # no repair is carried onto the still's eyes: carried from an open eye, it showed through a closing
        # lid and cost a validation person 3 of 24 blink frames by the evaluator's tool (README)
        self.carried = 1 - eyes_mask(still.landmarks, self.plain.shape[0])[..., None]
        self.still_repairs = 0
        self.mouth = mouth

    def repair(self, picture: np.ndarray, target: np.ndarray, code: np.ndarray, pose) -> np.ndarray:
        """`picture` (the warp, or any picture of this still's face at `target`) repaired by the generator
        with the still's identity vector."""
        return repaired(self.net, picture, target, self.z_id, code[:self.net.code_dim], pose, self.run)

    def repair_still(self, state, carry: bool = True) -> np.ndarray:
        """The generator's frame for `state` (pose, code), and from it (`carry`) the still that later frames
        warp.
        Safe beside frames built in another thread: this reads only the plain still and swaps the repaired
        one in whole. A closing eye is left as the reference blend drew it (keep_blink), so no lid's repair
        is carried onto the still's open eye."""
        pose, code = state
        target = self.target_landmarks(pose, code)
        maps = self.warper.maps(target)
        composed = self.blender.compose(remap(self.plain, maps), target, self.coder.mouth_cue(code))
        out = keep_blink(self.repair(composed, target, code, pose), composed,
                         self.blender.closing_eyes(target, composed.shape[0]))
        if not carry:
            return out
        change = splat_back(out.astype(np.float32) - composed, maps, self.plain.shape[:2]) * self.carried
        self.warper.still = np.clip(self.plain + change + 0.5, 0, 255).astype(np.uint8)
        self.still_repairs += 1
        return out

    def render(self, state, repair: bool = True) -> np.ndarray:
        """The frame: the still repaired on every `every`-th call, and every frame the repaired still's warp
        with the mouth generator's mouth (at every=1 the generator's own frame); the warp of the (last
        repaired) still alone with repair=False."""
        if state is None or not repair:
            return super().render(state)
        self.frames += 1
        if self.every == 1:
            return self.repair_still(state, carry=False)     # no frame warps the still
        if (self.frames - 1) % self.every == 0:
            self.repair_still(state)
        return super().render(state) if self.mouth is None else mouth_frame(self, *self.mouth, state)


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
