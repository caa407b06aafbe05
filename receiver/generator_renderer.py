"""The receiver's neural renderer: the warp of the still, repaired by the trained MC-AAD generator.

The generator works at the size it was trained at (128² by default) on the downsampled warp; its repair
is upsampled and added to the full 256² warp, so fine detail the warp keeps is not lost."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from callsynth.face.basis import ExpressionBasis
from callsynth.face.still import Still
from callsynth.model.chip import chip_theta, cut_chips
from callsynth.model.identity import DlibFaceEmbedder
from callsynth.model.repairer import CallGenerator
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
    net = CallGenerator(basis.k, config["widths"], config["blocks"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["g"].items()})
    return net.eval(), int(config["size"])


def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 image as the generator's (1, 3, size, size) input in [-1, 1]."""
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1


@torch.inference_mode()
def repaired(net: CallGenerator, size: int, image: np.ndarray, landmarks: np.ndarray, z_id: torch.Tensor,
             code: np.ndarray, pose) -> np.ndarray:
    """`image` (the warp, or any attribute picture) plus the generator's repair, upsampled to its size."""
    x = to_input(image, size)
    lmap = torch.from_numpy(landmark_map(landmarks, size, size / image.shape[0])).float()[None, None] / 127.5 - 1
    y, _ = net(x, lmap, z_id, torch.from_numpy(np.asarray(code, np.float32))[None],
               torch.from_numpy(pose_vector(pose))[None])
    repair = cv2.resize((y - x)[0].permute(1, 2, 0).numpy() * 127.5, (image.shape[1], image.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
    return np.clip(image.astype(np.float32) + repair, 0, 255).astype(np.uint8)


class GeneratorRenderer(WarpRenderer):
    def __init__(self, basis: ExpressionBasis, still: Still, model: str | Path | None = None,
                 threads: int | None = None):
        super().__init__(basis, still)
        if threads:
            torch.set_num_threads(threads)
        self.net, self.size = load_generator(model, basis)
        scale = self.size / still.image.shape[0]
        with torch.inference_mode():
            theta = torch.from_numpy(chip_theta(still.landmarks * scale, self.size))[None]
            self.z_id = DlibFaceEmbedder()(cut_chips(to_input(still.image, self.size), theta))  # cached once

    def render(self, state) -> np.ndarray:
        if state is None:
            return self.still.image.copy()
        pose, code = state
        target = self.target_landmarks(pose, code)
        return repaired(self.net, self.size, self.warper.warp(target), target, self.z_id, code, pose)
