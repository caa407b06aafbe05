"""The identity encoder z_id: dlib's face-recognition ResNet (128-d), read from the weights file the PyPI
package `face_recognition_models` installs and evaluated in torch, so the identity loss has a gradient.

dlib's serialisation: integers are one header byte (low nibble = byte count, bit 7 = sign) then the bytes
little-endian; strings are a length then the bytes; tensors (version 2) are num_samples, k, nr, nc then
raw little-endian float32. A network is written outermost layer first for its headers, then each layer's
parameters from the input upwards, so the convolutions and affine layers appear in forward order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CHIP_SIZE = 150
CHIP_PADDING = 0.25
MEAN_RGB = (122.782, 117.001, 104.298)   # what dlib's input_rgb_image_sized subtracts


class IdentityModelError(RuntimeError):
    """The dlib weights are missing or not the expected network."""


def weights_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelError("face_recognition_models is not installed (pip install face_recognition_models)")
    path = Path(spec.submodule_search_locations[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.exists():
        raise IdentityModelError(f"{path}: missing from face_recognition_models")
    return path


class _Reader:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def integer(self) -> int:
        head = self.data[self.pos]
        n = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            raise IdentityModelError("unexpected tensor version in the dlib file")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape).copy()


def _layers(data: bytes, name: bytes) -> list[int]:
    """Positions just after every length-prefixed occurrence of a layer name."""
    marker = bytes([0x01, len(name)]) + name
    out, pos = [], data.find(marker)
    while pos >= 0:
        out.append(pos + len(marker))
        pos = data.find(marker, pos + 1)
    return out


def read_dlib_resnet(path: Path) -> dict:
    data = path.read_bytes()
    convs = []
    for pos in _layers(data, b"con_4") or _layers(data, b"con_5"):
        reader = _Reader(data, pos)
        params = reader.tensor().ravel()
        filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
        k = (params.size - filters) // (filters * nr * nc)
        convs.append({"weight": params[:filters * k * nr * nc].reshape(filters, k, nr, nc),
                      "bias": params[filters * k * nr * nc:], "stride": stride_y, "padding": pad_y})
    affines = []
    for pos in _layers(data, b"affine_"):
        params = _Reader(data, pos).tensor().ravel()
        half = params.size // 2
        affines.append((params[:half], params[half:]))
    fc_pos = _layers(data, b"fc_2")
    if len(convs) != 29 or len(affines) != 29 or len(fc_pos) != 1:
        raise IdentityModelError(f"{path}: not dlib's face-recognition ResNet "
                                 f"({len(convs)} convolutions, {len(affines)} affine layers)")
    header = bytes([0x01, 0x02, 0x02, 0x00, 0x01, 0x01, 0x80, 0x01, 0x01, 0x01, 0x01])  # 256 x 128 tensor
    start = data.find(header, fc_pos[0])
    fc = _Reader(data, start).tensor().reshape(256, 128)
    return {"convs": convs, "affines": affines, "fc": fc}


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of different sizes add where they overlap, zero elsewhere."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class DlibFaceEmbedder(nn.Module):
    """150×150 aligned face chips (RGB, 0–255) → 128-d embeddings, as dlib computes them. Frozen."""

    LEVELS = [(0, 3), (1, 3), (1, 2), (1, 2), (1, 0)]   # (downsampling blocks, plain blocks) per level

    def __init__(self, path: Path | None = None):
        super().__init__()
        weights = read_dlib_resnet(Path(path) if path else weights_path())
        self.convs = nn.ModuleList()
        for spec in weights["convs"]:
            conv = nn.Conv2d(spec["weight"].shape[1], spec["weight"].shape[0], spec["weight"].shape[2],
                             stride=spec["stride"], padding=spec["padding"])
            conv.weight.data = torch.from_numpy(spec["weight"])
            conv.bias.data = torch.from_numpy(spec["bias"])
            self.convs.append(conv)
        for i, (gamma, beta) in enumerate(weights["affines"]):
            self.register_buffer(f"gamma{i}", torch.from_numpy(gamma)[None, :, None, None])
            self.register_buffer(f"beta{i}", torch.from_numpy(beta)[None, :, None, None])
        self.register_buffer("fc", torch.from_numpy(weights["fc"]))
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB)[None, :, None, None])
        self.requires_grad_(False)
        self.eval()

    def _conv_affine(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.convs[i](x) * getattr(self, f"gamma{i}") + getattr(self, f"beta{i}")

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean_rgb) / 256.0
        x = F.max_pool2d(torch.relu(self._conv_affine(x, 0)), 3, stride=2)
        i = 1
        for downs, plain in self.LEVELS:
            for _ in range(downs):
                y = self._conv_affine(torch.relu(self._conv_affine(x, i)), i + 1)
                x = torch.relu(_add(F.avg_pool2d(x, 2, stride=2), y))
                i += 2
            for _ in range(plain):
                y = self._conv_affine(torch.relu(self._conv_affine(x, i)), i + 1)
                x = torch.relu(_add(x, y))
                i += 2
        return x.mean(dim=(2, 3)) @ self.fc


SAME_FACE = 0.6     # dlib's own threshold: embeddings of one person lie closer than this


def face_distance(image_a: np.ndarray, landmarks_a: np.ndarray, image_b: np.ndarray,
                  landmarks_b: np.ndarray, embedder: DlibFaceEmbedder | None = None) -> float:
    """dlib's distance between the faces of two crops (RGB uint8, with their landmarks in crop pixels);
    under SAME_FACE is one person. About a tenth of a second on a CPU: for the rare new still, not per frame."""
    from .chip import chip_theta, cut_chips

    embedder = embedder or DlibFaceEmbedder()
    images, thetas = [], []
    for image, landmarks in ((image_a, landmarks_a), (image_b, landmarks_b)):
        images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1)
        thetas.append(torch.from_numpy(chip_theta(landmarks, image.shape[0])))
    with torch.inference_mode():
        codes = embedder(cut_chips(torch.stack(images), torch.stack(thetas)))
    return float(torch.linalg.norm(codes[0] - codes[1]))
