"""The expression basis file: mean face shape, rigid points, PCA basis and the wire's quantisation ranges.

Sender and receiver must hold the very same file, so it is named by a hash of its contents and every
packet carries a tag of that hash. Loading checks the hash: an edited or damaged file is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

BASIS_FORMAT = 1
POSE_FIELDS = ("rx", "ry", "rz", "tx", "ty", "log_scale")


class BasisError(ValueError):
    """A basis file that is missing, damaged, of another format, or not the one expected."""


@dataclass
class ExpressionBasis:
    mean_shape: np.ndarray   # (478, 3) canonical face, centred, RMS radius 1
    rigid_idx: np.ndarray    # indices of points that expression barely moves, for the pose fit
    components: np.ndarray   # (K, 478*3) orthonormal rows, canonical units
    code_lo: np.ndarray      # (K,) quantisation range of each coefficient
    code_hi: np.ndarray
    code_bits: np.ndarray    # (K,) bits per coefficient on the wire
    pose_lo: np.ndarray      # (6,) ranges of rotvec, translation x/y and log scale
    pose_hi: np.ndarray
    pose_bits: np.ndarray    # (6,)
    meta: dict = field(default_factory=dict)

    ARRAYS = ("mean_shape", "rigid_idx", "components", "code_lo", "code_hi", "code_bits",
              "pose_lo", "pose_hi", "pose_bits")

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def digest(self) -> str:
        """SHA-256 over the arrays and metadata, independent of how the file was zipped."""
        h = hashlib.sha256(f"callsynth-basis-{BASIS_FORMAT}".encode())
        for name in self.ARRAYS:
            arr = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.tobytes())
        h.update(json.dumps(self.meta, sort_keys=True).encode())
        return h.hexdigest()

    @property
    def tag(self) -> int:
        """16-bit tag carried by every packet, so a receiver can refuse a foreign basis."""
        return int(self.digest[:4], 16)

    @property
    def name(self) -> str:
        return f"basis-{self.digest[:12]}"

    def project(self, offsets: np.ndarray) -> np.ndarray:
        """Canonical landmark offsets (..., 478, 3) to codes (..., K)."""
        flat = np.asarray(offsets).reshape(*np.shape(offsets)[:-2], -1)
        return flat @ self.components.T

    def expand(self, code: np.ndarray) -> np.ndarray:
        """Codes (..., K) to canonical landmark offsets (..., 478, 3)."""
        flat = np.asarray(code) @ self.components
        return flat.reshape(*np.shape(code)[:-1], -1, 3)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.npz"
        buf = io.BytesIO()
        np.savez_compressed(buf, format=np.array(BASIS_FORMAT), digest=np.array(self.digest),
                            meta=np.array(json.dumps(self.meta, sort_keys=True)),
                            **{n: getattr(self, n) for n in self.ARRAYS})
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ExpressionBasis":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = int(data["format"])
                if fmt != BASIS_FORMAT:
                    raise BasisError(f"{path}: basis format {fmt}, this build reads {BASIS_FORMAT}")
                basis = cls(**{n: data[n] for n in cls.ARRAYS}, meta=json.loads(str(data["meta"])))
                stored = str(data["digest"])
        except BasisError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            # numpy says any file without an .npy/.npz signature "contains pickled (object) data" and advises
            # loading it unsafely: advice a basis must never take (it is read with allow_pickle=False)
            why = "not an .npz archive of arrays" if "pickle" in str(exc) else str(exc)
            raise BasisError(f"{path}: not a readable basis file ({why})") from exc
        if basis.digest != stored:
            raise BasisError(f"{path}: contents do not match their hash (damaged or edited file)")
        return basis


def default_basis_path() -> Path:
    """The basis shipped in callsynth/assets, named in assets/default_basis.json."""
    assets = resources.files("callsynth") / "assets"
    name = json.loads((assets / "default_basis.json").read_text())["basis"]
    return Path(str(assets / f"{name}.npz"))


def load_basis(path: str | Path | None = None) -> ExpressionBasis:
    return ExpressionBasis.load(path or default_basis_path())
