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
    net.load_state_dict(state["g"])
    return net.eval(), int(config["size"])


class GeneratorRenderer(WarpRenderer):
    def __init__(self, basis: ExpressionBasis, still: Still, model: str | Path | None = None,
                 threads: int | None = None):
        super().__init__(basis, still)
        if threads:
            torch.set_num_threads(threads)
        self.net, self.size = load_generator(model, basis)
        self.scale = self.size / still.image.shape[0]
        small = cv2.resize(still.image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            image = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1
            theta = torch.from_numpy(chip_theta(still.landmarks * self.scale, self.size))[None]
            self.z_id = DlibFaceEmbedder()(cut_chips(image, theta))   # cached once, as the design says

    @torch.inference_mode()
    def render(self, state) -> np.ndarray:
        if state is None:
            return self.still.image.copy()
        pose, code = state
        target = self.target_landmarks(pose, code)
        warp = self.warper.warp(target)
        small = cv2.resize(warp, (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1
        lmap = torch.from_numpy(landmark_map(target, self.size, self.scale)).float()[None, None] / 127.5 - 1
        y, _ = self.net(x, lmap, self.z_id, torch.from_numpy(np.asarray(code, np.float32))[None],
                        torch.from_numpy(pose_vector(pose))[None])
        repair = ((y - x)[0].permute(1, 2, 0).numpy() * 127.5)
        repair = cv2.resize(repair, (warp.shape[1], warp.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(warp.astype(np.float32) + repair, 0, 255).astype(np.uint8)
