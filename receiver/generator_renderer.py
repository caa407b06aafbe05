"""The receiver's neural renderer: the warp of the still, repaired by the trained MC-AAD generator.

The generator works at the size it was trained at (128² by default) on the downsampled warp; its repair
is upsampled and added to the full 256² warp (CallGenerator.render), so fine detail the warp keeps is not
lost. `reenact` and `eval` run it traced with TorchScript, the fastest way `callsynth bench` measured; the
call's receiver runs it eager, which costs less memory (see receiver/call.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from callsynth.face.basis import ExpressionBasis
from callsynth.face.still import Still
from callsynth.model.chip import chip_theta, cut_chips
from callsynth.model.identity import DlibFaceEmbedder
from callsynth.model.repairer import ID_DIM, CallGenerator, FullFrame
from callsynth.train.pairs import landmark_map, pose_vector

from .renderer import WarpRenderer

MODEL_FORMAT = 1


class GeneratorModelError(ValueError):
    """A generator file that is missing, damaged, or made for another basis."""


def default_generator_path() -> Path:
    return Path(__file__).resolve().parents[1] / "callsynth" / "assets" / "generator.pt"


def load_generator(path: str | Path | None, basis: ExpressionBasis) -> tuple[CallGenerator, int]:
    import json

    from callsynth.checkpoints import read_checkpoint

    path = Path(path) if path else default_generator_path()
    state = read_checkpoint(path, GeneratorModelError, "generator", MODEL_FORMAT, basis,
                            "train one with `callsynth train`")
    config = json.loads(state["config"])
    net = CallGenerator(basis.k, config["widths"], config["blocks"], int(config["size"]),
                        gain=float(state.get("repair_gain", 1.0)))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["g"].items()})
    return net.eval(), int(config["size"])


def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 image as the generator's (1, 3, size, size) input in [-1, 1]."""
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1


def identity_of(image: np.ndarray, landmarks: np.ndarray, size: int) -> torch.Tensor:
    """z_id (1, 128) of a face crop: dlib's embedding of the chip cut the way training cut it."""
    theta = torch.from_numpy(chip_theta(np.asarray(landmarks) * size / image.shape[0], size))[None]
    with torch.inference_mode():
        return DlibFaceEmbedder()(cut_chips(to_input(image, size), theta))


def traced(net: CallGenerator, full_size: int) -> torch.jit.ScriptModule:
    """The full-frame generator traced for a full_size² crop (TorchScript: what the bench found fastest).
    z_id is an input of the trace, not a constant, so one trace serves every still. Run twice here:
    TorchScript optimises a trace on its first calls (several times slower), which would otherwise fall
    on a call's first frames."""
    s = net.size
    example = (torch.zeros(1, 3, full_size, full_size), torch.zeros(1, 1, s, s), torch.zeros(1, ID_DIM),
               torch.zeros(1, net.code_dim), torch.zeros(1, 6))
    with torch.inference_mode():
        run = torch.jit.trace(FullFrame(net).eval(), example, check_trace=False)
        for _ in range(2):
            run(*example)
    return run


@torch.inference_mode()
def repaired(net: CallGenerator, image: np.ndarray, landmarks: np.ndarray, z_id: torch.Tensor,
             code: np.ndarray, pose, run=None) -> np.ndarray:
    """`image` (the warp, or any attribute picture, RGB uint8) repaired by the generator at its full size.
    `run`: a traced FullFrame to use instead of the eager net."""
    full = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    lmap = torch.from_numpy(landmark_map(landmarks, net.size, net.size / image.shape[0])).float()[None, None]
    out = (run or FullFrame(net))(full, lmap / 127.5 - 1, z_id,
                                  torch.from_numpy(np.asarray(code, np.float32))[None],
                                  torch.from_numpy(pose_vector(pose))[None])
    return np.rint((out[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)


class GeneratorRenderer(WarpRenderer):
    def __init__(self, basis: ExpressionBasis, still: Still, model: str | Path | None = None,
                 script: bool = True, loaded: tuple[CallGenerator, int] | None = None, run=None):
        """`model`: a generator file (default the shipped one), or `loaded`: what load_generator gave;
        `run`: that network already traced. Torch's thread count is the caller's (the Receiver's
        `threads`, the bench's loop)."""
        super().__init__(basis, still)
        self.net, self.size = loaded or load_generator(model, basis)
        self.z_id = identity_of(still.image, still.landmarks, self.size)  # cached once
        self.run = run or (traced(self.net, still.image.shape[0]) if script else None)

    def render(self, state, repair: bool = True) -> np.ndarray:
        """The repaired frame; the warp alone with repair=False (the receiver's lower quality steps)."""
        if state is None or not repair:
            return super().render(state)
        pose, code = state
        target = self.target_landmarks(pose, code)
        return repaired(self.net, self.compose(target), target, self.z_id, code[:self.net.code_dim], pose,
                        self.run)
