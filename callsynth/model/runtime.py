"""What running the generator needs, below both the receiver and training (neither imports the other for
it): its file format, loading and export, the arrays it reads (input picture, landmark map, pose vector,
identity vector) made from a call's data, tracing, and one repaired frame.

The generator works at the size it was trained at (128² by default) on the downsampled attribute picture;
its repair is upsampled and added to the full 256² picture (CallGenerator.render), so fine detail the
warp keeps is not lost."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..face.basis import ExpressionBasis
from ..face.regions import inner_mouth, is_teeth, lip_gap
from .chip import chip_theta, cut_chips
from .identity import DlibFaceEmbedder
from .repairer import ID_DIM, POSE_DIM, CallGenerator, FullFrame

# One format for the generator's files: a training checkpoint and the exported model a receiver loads
# (which keeps only the generator's part of it) are read and written against this one constant.
GENERATOR_FORMAT = 1
MOUTH_FORMAT = 1          # the mouth generator's file (callsynth/model/mouth_generator.py)


class GeneratorModelError(ValueError):
    """A generator file that is missing, damaged, or made for another basis."""


def default_generator_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "generator.pt"


def load_generator(path: str | Path | None, basis: ExpressionBasis) -> tuple[CallGenerator, int]:
    import json

    from ..checkpoints import read_checkpoint

    path = Path(path) if path else default_generator_path()
    state = read_checkpoint(path, GeneratorModelError, "generator", GENERATOR_FORMAT, basis,
                            "train one with `callsynth train`", keys=("config", "g"))
    config = json.loads(state["config"])
    net = CallGenerator(basis.k, config["widths"], config["blocks"], int(config["size"]),
                        gain=float(state.get("repair_gain", 1.0)))
    net.load_state_dict(float_weights(state["g"]))
    return fused(net.eval()), int(config["size"])


def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 image as the generator's (1, 3, size, size) input in [-1, 1]."""
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1


def identity_of(image: np.ndarray, landmarks: np.ndarray, size: int) -> torch.Tensor:
    """z_id (1, 128) of a face crop: dlib's embedding of the chip cut the way training cut it."""
    theta = torch.from_numpy(chip_theta(np.asarray(landmarks) * size / image.shape[0], size))[None]
    with torch.inference_mode():
        return DlibFaceEmbedder()(cut_chips(to_input(image, size), theta))


def full_frame_example(net: CallGenerator, full_size: int) -> tuple:
    """Inputs of the shape FullFrame reads for a full_size² crop (for tracing and export)."""
    s = net.size
    return (torch.zeros(1, 3, full_size, full_size), torch.zeros(1, 1, s, s), torch.zeros(1, ID_DIM),
            torch.zeros(1, net.code_dim), torch.zeros(1, POSE_DIM))


def traced(net: CallGenerator, full_size: int) -> torch.jit.ScriptModule:
    """The full-frame generator traced for a full_size² crop (TorchScript).
    z_id is an input of the trace, not a constant, so one trace serves every still. Run twice here:
    TorchScript optimises a trace on its first calls (several times slower), which would otherwise fall
    on a call's first frames."""
    example = full_frame_example(net, full_size)
    with torch.inference_mode():
        run = torch.jit.trace(FullFrame(net).eval(), example, check_trace=False)
        for _ in range(2):
            run(*example)
    return run


class OnnxRun:
    """A network exported to ONNX and run by ONNX Runtime, called as the network is (torch tensors in, the
    first output as a torch tensor out), so `repaired` and `mouth_repaired` take it as they take a trace.
    On a 2-core AMD EPYC it ran the mouth generator in half TorchScript's time (1.4-1.6 against 2.8-3.1 ms,
    one thread) and the full-frame generator in three quarters (27 against 35 ms, two threads): `callsynth
    bench` times both ways. Exported from the loaded network when the renderers load (about a second), so
    the file a receiver runs is always the checkpoint it loaded; nothing is written to disk. `threads`:
    ONNX Runtime's own, fixed for the session; its threads never spin waiting for work, since a call
    shares two cores with the tracker, the speech model and the other side."""

    def __init__(self, module: torch.nn.Module, example: tuple, threads: int = 1):
        import io
        import warnings

        import onnxruntime as ort

        names = [f"in{i}" for i in range(len(example))]
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            # torch 2.13 calls the TorchScript-based exporter legacy; the newer one needs onnxscript and an
            # onnx whose protobuf MediaPipe 0.10.14 refuses
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=17, input_names=names)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, int(threads)), 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        # an input the graph does not use is dropped by the export: feed only those it kept
        kept = {i.name for i in self.session.get_inputs()}
        self.feeds = [(i, name) for i, name in enumerate(names) if name in kept]
        self(*example)                        # the session's first run allocates its buffers

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(tensors[i].detach().numpy(), np.float32) for i, name in self.feeds}
        return torch.from_numpy(self.session.run(None, feed)[0])


def onnx_full_frame(net: CallGenerator, full_size: int, threads: int) -> OnnxRun:
    """The full-frame generator for a full_size² crop, run by ONNX Runtime on `threads` threads."""
    return OnnxRun(FullFrame(net), full_frame_example(net, full_size), threads)


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


def export_generator(checkpoint: Path | dict, out: Path) -> Path:
    """The generator alone (what a receiver loads), from a training checkpoint (file or state), with the
    repair gain validation chose; weights stored as float16 to halve the file (load_generator computes
    in float32)."""
    state = checkpoint if isinstance(checkpoint, dict) else \
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    slim = {k: state[k] for k in ("format", "step", "basis", "config")}
    slim["repair_gain"] = float(state.get("repair_gain", 1.0))
    slim["g"] = half_weights(state["g"])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, out)
    return out


def landmark_map(landmarks: np.ndarray, size: int, scale: float) -> np.ndarray:
    """A size² uint8 image with a dot at every landmark (the generator's extra attribute channel)."""
    canvas = np.zeros((size, size), np.uint8)
    for x, y in np.asarray(landmarks)[:, :2] * scale:
        if 0 <= x < size and 0 <= y < size:
            canvas[int(y), int(x)] = 255
    return cv2.GaussianBlur(canvas, (3, 3), 0)


def pose_vector(pose) -> np.ndarray:
    """The pose as the generator reads it (Pose.vector, float32)."""
    return pose.vector().astype(np.float32)


def default_mouth_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "mouth_generator.pt"


def load_mouth_generator(path: str | Path | None, basis: ExpressionBasis):
    """The mouth generator of a file (default the shipped one), in float32, eval mode."""
    from ..checkpoints import read_checkpoint
    from .mouth_generator import MouthGenerator

    path = Path(path) if path else default_mouth_path()
    state = read_checkpoint(path, GeneratorModelError, "mouth generator", MOUTH_FORMAT, basis,
                            "train one with `callsynth train-mouth`", keys=("code_dim", "widths", "blocks", "g"))
    net = MouthGenerator(int(state["code_dim"]), list(state["widths"]), list(state["blocks"]))
    net.load_state_dict(float_weights(state["g"]))
    return fused(net.eval())


def half_weights(weights: dict) -> dict:
    """A state dict as a model file keeps it: floating tensors in float16 (half the file)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in weights.items()}


def float_weights(weights: dict) -> dict:
    """A model file's state dict as the network computes with it: floating tensors in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def fused(net: torch.nn.Module) -> torch.nn.Module:
    """A loaded network with every MC-AAD layer fused for inference (MCAADLayer.fuse)."""
    from .mcaad import MCAADLayer

    for layer in net.modules():
        if isinstance(layer, MCAADLayer):
            layer.fuse()
    return net


def mouth_example(net) -> tuple:
    """Inputs of the shape the mouth generator reads (for tracing and export)."""
    from ..face.mouth_patch import PATCH_H, PATCH_W
    from .mouth_generator import IN_CHANNELS, MOUTH_SOURCES

    return (torch.zeros(1, IN_CHANNELS, PATCH_H, PATCH_W), torch.zeros(1, net.code_dim), torch.zeros(1, POSE_DIM),
            torch.zeros(1, len(MOUTH_SOURCES)))


def traced_mouth(net) -> torch.jit.ScriptModule:
    """The mouth generator traced (TorchScript), run twice so its first optimising calls are paid here:
    what `callsynth bench` compares ONNX Runtime with."""
    example = mouth_example(net)
    with torch.inference_mode():
        run = torch.jit.trace(net.eval(), example, check_trace=False)
        for _ in range(2):
            run(*example)
    return run


def onnx_mouth(net, threads: int = 1) -> OnnxRun:
    """The mouth generator as a call runs it: ONNX Runtime on one thread (the frame's path; a second
    thread saved 0.1 of its 1.4 ms on an idle 2-core AMD EPYC)."""
    return OnnxRun(net, mouth_example(net), threads)


@torch.inference_mode()
def mouth_repaired(run, code_dim: int, picture: np.ndarray, plain: np.ndarray, patch, target: np.ndarray,
                   code: np.ndarray, pose, present: np.ndarray) -> np.ndarray:
    """`picture` (the composed frame, RGB uint8, crop pixels) with its mouth repaired by the mouth
    generator `run` (traced or eager) as far as the mouth is open (`open_weight`; a closed mouth is left
    as it is, without running the network): `plain` the still warped alone, cut at `patch` (a MouthPatch
    of `target`); `present` which mouth references the receiver holds."""
    from .mouth_generator import mouth_attributes, open_weight

    weight = float(open_weight(lip_gap(target)))
    if weight <= 0:
        return picture
    composed = patch.cut(picture)
    planes = mouth_attributes(composed, plain, patch.mask(target))
    expression = np.zeros(code_dim, np.float32)
    expression[:min(code_dim, len(code))] = np.asarray(code, np.float32)[:code_dim]
    out = run(torch.from_numpy(planes)[None], torch.from_numpy(expression)[None],
              torch.from_numpy(pose_vector(pose))[None], torch.from_numpy(np.asarray(present, np.float32))[None])
    repair = (out[0].permute(1, 2, 0).numpy() + 1) * 127.5 - composed.astype(np.float32)
    result = picture.copy()
    patch.add(result, weight * repair)
    return kept_teeth(result, picture, target)


def kept_teeth(result: np.ndarray, composed: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`result` (the mouth generator's frame) with `composed`'s teeth kept, in crop pixels: a pixel that the
    composed frame shows as teeth inside the target's inner lips may be brightened, never darkened, and stays
    teeth. `keep_teeth` holds that on the patch, but the patch's repair comes back into the crop by
    interpolation, and a darkened neighbour bleeds into a tooth's edge (620900105's teeth share fell from
    the warp's 14.6 % to 10.2 % against the truth's 14.2 %; 13.5 % with this, README)."""
    found = inner_mouth(composed.shape, target)
    if found is None:
        return result
    (x0, y0, x1, y1), inside = found
    before, after = composed[y0:y1, x0:x1], result[y0:y1, x0:x1]
    shown = inside & is_teeth(before)
    if shown.any():
        brighter = np.maximum(after, before)
        after[shown] = np.where(is_teeth(brighter)[..., None], brighter, before)[shown]
    return result
