"""The interior code: three bytes a packet that tell the receiver how the real mouth's interior differs from
the one it is about to draw.

The receiver draws an open mouth's interior from a picture it holds (reference_blend.py), and the mouth
generator repairs it from the code; neither can know whether this moment shows the upper teeth, the lower,
the tongue or a dark mouth, and on the validation people that was most of what was left of the interior
error. A perfect interior placed inside the receiver's own lips would take WDA_KatieHill_000's from 42.6 to
24.9 (its shape is right to an IoU of 0.81; a /tmp probe on this file's grounds). The sender sees the real
frame and can draw the receiver's interior itself (it mirrors the receiver's pictures: sender/mouth_choice.py),
so it sends the difference: the grey-level residual, real minus drawn, on the mouth's patch
(face/mouth_patch.py) inside the inner lips grown by two patch pixels, as entries of a codebook fitted on
the training people (`callsynth fit-interior`, train/interior_fit.py) in STAGES stages of CODES entries: the
first stage's nearest entry, then the second's nearest to what the first left (residual vector
quantisation: a byte each, and 16.8 million interiors for the price of three 256-entry tables). Entry 0 of a stage
is no change: a closed mouth, or nothing to say. An index packs the stages' entries, the first in its low
byte.

On the validation people's mouth patches (`callsynth fit-interior`, and /tmp probes on the samples of
train/mouth_pairs.py, inside the inner lips): drawn 27.5, one byte 20.8, two bytes 18.5, three 17.1
(WDA_KatieHill_000: 40.4, 30.7, 27.7, 25.8). The third byte took the place of a sequence number no receiver
read (wire v8). All three shared by a packet's frame and the unsent one before it did a little better than
the first shared and a second byte for each frame (Katie's pairs of frames: 28.6 against 28.8; two bytes
shared 29.9; a /tmp probe).

The sender picks the three bytes by a beam search (BEAM chains kept from stage to stage, the best at the
end) rather than each stage's nearest entry in turn: the codebook and the wire are the same, the chosen
chain nearer. Validation patches 17.06 -> 16.74, the selection people's 11.81 -> 11.52 (4 chains: 16.79
and 11.56; 16: 16.74 and 11.48; rescoring the final chains by absolute grey error instead: 16.87, worse; a
/tmp probe on a 2-core AMD EPYC, 2026-12-01), for 0.74 ms against 0.20 a packet of two frames there.

Grey, not colour: the residual is light and dark (teeth against a dark mouth), and a colour codebook of the
same size did no better on the validation people's mouth patches (a /tmp probe: 20.7 either way).
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from .mouth_patch import PATCH_H, PATCH_W, MouthPatch

CODES = 256                  # a byte a stage: entry 0 (no change) and CODES - 1 fitted
STAGES = 3
FORMAT = 3                   # 1: one stage; 2: two
MAX_INDEX = CODES ** STAGES   # indices are 0 .. MAX_INDEX - 1
BEAM = 8                     # chains the sender's search keeps (InteriorCodebook.nearest)
GROW = 5                     # the inner lips' mask grown by a GROW x GROW square (two patch pixels each way)


class InteriorCodeError(ValueError):
    """An interior codebook file that cannot be used."""


def default_codebook_path() -> Path:
    return Path(str(resources.files("callsynth") / "assets" / "interior_codebook.npz"))


def region(inner: np.ndarray) -> np.ndarray:
    """Where the code speaks, (PATCH_H, PATCH_W) float32 in [0, 1], from the inner-lip mask in the patch:
    grown by two pixels (the lips' edge, where a mouth drawn less open than the real one shows lip) and
    feathered by one."""
    grown = cv2.dilate(np.asarray(inner, np.float32), np.ones((GROW, GROW), np.uint8))
    return cv2.blur(grown, (3, 3))


def grey(patch: np.ndarray) -> np.ndarray:
    """(PATCH_H, PATCH_W) float32 grey level of an RGB patch (the channels' mean)."""
    return np.asarray(patch, np.float32).mean(axis=-1)


class InteriorCodebook:
    """STAGES x CODES residual patches (grey levels, PATCH_H x PATCH_W); entry 0 of each stage is zero."""

    def __init__(self, entries: np.ndarray):
        entries = np.asarray(entries, np.float32)
        if entries.shape != (STAGES, CODES, PATCH_H, PATCH_W):
            raise InteriorCodeError(f"interior codebook of shape {entries.shape}, expected "
                                    f"{(STAGES, CODES, PATCH_H, PATCH_W)}")
        if not np.isfinite(entries).all() or np.abs(entries).max() > 255 or np.any(entries[:, 0]):
            raise InteriorCodeError("interior codebook entries out of range (or an entry 0 not zero)")
        self.entries = entries
        self.flat = entries.reshape(STAGES, CODES, -1)
        self.squares = np.square(self.flat)
        self.tag = hashlib.sha256(entries.astype(np.float16).tobytes()).hexdigest()[:12]

    @classmethod
    def load(cls, path: str | Path | None = None) -> InteriorCodebook:
        path = Path(path) if path is not None else default_codebook_path()
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != FORMAT:
                    raise InteriorCodeError(f"{path}: interior codebook format {int(data['format'])}, "
                                            f"this callsynth reads {FORMAT}")
                return cls(data["entries"])
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, InteriorCodeError):
                raise
            raise InteriorCodeError(f"{path}: not an interior codebook ({exc})") from exc

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, entries=self.entries.astype(np.float16), format=np.int64(FORMAT))
        return path

    def nearest_entry(self, stage: int, residual: np.ndarray, weight: np.ndarray) -> int:
        """Stage `stage`'s entry whose weighted patch is nearest `residual` weighted (PATCH_H x PATCH_W each,
        or several of each stacked: then nearest all of them together); 0 where none beats no change."""
        w2 = np.square(weight.reshape(-1, self.flat.shape[2]), dtype=np.float32)
        r = residual.reshape(1, -1, self.flat.shape[2]).astype(np.float32)
        return int(np.argmin(self._distances(stage, w2, r)[0]))

    def _distances(self, stage: int, w2: np.ndarray, left: np.ndarray) -> np.ndarray:
        """(chains, CODES): for each chain's residuals `left` (chains x residuals x pixels, weighted by `w2`,
        residuals x pixels), the sum of w² (entry - left)² over pixels and residuals for each entry of
        `stage`, less the chain's own sum of w² left², which every entry shares."""
        return self.squares[stage] @ w2.sum(axis=0) - 2 * ((w2 * left).sum(axis=1) @ self.flat[stage].T)

    def nearest(self, residual: np.ndarray, weight: np.ndarray, beam: int = BEAM) -> int:
        """The index to send for `residual` (weighted as nearest_entry), a byte a stage: the best of the `beam`
        best chains of entries kept from stage to stage (a beam search), and never worse than taking each
        stage's nearest entry to what the stages before it left (the chain of a beam of 1)."""
        chains = [self._search(residual, weight, width) for width in sorted({1, beam})]
        return min(chains)[1]

    def _search(self, residual: np.ndarray, weight: np.ndarray, width: int) -> tuple[float, int]:
        """(weighted squared distance less what every index shares, index) of the best chain a beam of
        `width` finds."""
        w2 = np.square(weight.reshape(-1, self.flat.shape[2]), dtype=np.float32)
        left = residual.reshape(1, -1, self.flat.shape[2]).astype(np.float32)   # chains x residuals x pixels
        cost, index = np.zeros(1, np.float64), np.zeros(1, np.int64)
        for stage in range(STAGES):
            total = (cost[:, None] + self._distances(stage, w2, left)).ravel()
            keep = np.argsort(total, kind="stable")[:width]
            chain, entry = np.divmod(keep, CODES)
            cost, index = total[keep], index[chain] | entry << (8 * stage)
            left = left[chain] - self.flat[stage, entry][:, None, :]
        return float(cost[0]), int(index[0])

    def patch(self, index: int) -> np.ndarray:
        """The grey residual (PATCH_H x PATCH_W) an index stands for: its stages' entries added."""
        return sum(self.entries[stage, (index >> (8 * stage)) & (CODES - 1)] for stage in range(STAGES))

    def repair(self, index: int, weight: np.ndarray) -> np.ndarray:
        """Index `index` as a patch-sized repair for MouthPatch.add (H x W x 3: the grey added to every channel)."""
        return np.repeat((self.patch(index) * weight)[..., None], 3, axis=2)


@lru_cache(maxsize=1)
def shipped_codebook() -> InteriorCodebook | None:
    """The codebook in callsynth/assets (both ends of a call read the same file), or None, said once, where
    that file cannot be used: a sender then sends no interior code and a receiver draws none."""
    try:
        return InteriorCodebook.load()
    except InteriorCodeError as exc:
        logging.getLogger(__name__).warning("%s: open mouths are drawn without interior codes", exc)
        return None


def interior_index(codebook: InteriorCodebook, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int:
    """The code for the frames a packet's cue is drawn on, `views`: each (its camera crop, what the receiver
    will draw, the landmarks it draws at), the mouth patch of both cut at those landmarks; 0 for none."""
    residuals, weights = [], []
    for real, drawn, target in views:
        patch = MouthPatch.at(target, real.shape[0])
        weights.append(region(patch.mask(target)))
        residuals.append(grey(patch.cut(real)) - grey(patch.cut(drawn)))
    return codebook.nearest(np.stack(residuals), np.stack(weights)) if views else 0


def paint(image: np.ndarray, target: np.ndarray, index: int) -> None:
    """Add index `index`'s residual (the shipped codebook's) to the mouth of `image` (a crop drawn at
    `target`), in place; 0 (or an index out of range) changes nothing."""
    codebook = shipped_codebook()
    if index <= 0 or index >= MAX_INDEX or codebook is None:
        return
    patch = MouthPatch.at(target, image.shape[0])
    patch.add(image, codebook.repair(index, region(patch.mask(target))))
