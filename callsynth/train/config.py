"""Training configuration: one JSON file, every field with a default."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    size: int = 128                       # the generator works at size², its repair is upsampled to 256²
    widths: list = field(default_factory=lambda: [32, 64, 128, 128, 128])   # attribute encoder
    blocks: list = field(default_factory=lambda: [128, 128, 128, 64, 32, 3])  # generator blocks
    batch: int = 8
    steps: int = 3000
    lr: float = 2e-4
    lr_decay_start: int = 0               # from this step the learning rate falls linearly towards 0 at `steps`
    weights: dict = field(default_factory=lambda: {"rec": 10.0, "att": 1.0, "id": 2.0, "exp": 1.0,
                                                   "adv": 0.1, "cyc": 5.0,
                                                   "ssim": 0.0})
    cycle_every: int = 4                  # the cycle loss (two extra passes) every n-th step
    id_every: int = 1                     # L_id (dlib's ResNet, the costliest term on a CPU) every n-th step
    val_every: int = 0                    # validation SSIM/L1 against the warp every n steps (0: never)
    grid_s1_clips: int = 40               # training clips of GRID s1 (one person, many sentences)
    other_clips: int = 200                # training clips of everyone else (at most)
    frames_per_clip: int = 120
    portrait_people: int = 0              # London-set people whose neutral/smiling portraits add pairs (both ways)
    portrait_share: float = 0.25          # the share of each batch drawn from those portrait pairs
    frame_every: int = 4
    exp_steps: int = 800                  # steps to fit the expression CNN before the generator
    sample_every: int = 250
    checkpoint_every: int = 500
    out: str = "runs/generator"
    seed: int = 0
    device: str = "auto"

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config")
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        config = cls(**raw)
        if len(config.blocks) != len(config.widths) + 1 or config.blocks[-1] != 3:
            raise ValueError(f"{path}: blocks must have len(widths) + 1 entries, the last one 3 (RGB)")
        if not 0 <= config.portrait_share < 1:
            raise ValueError(f"{path}: portrait_share must be in [0, 1)")
        if config.size % (2 ** len(config.widths)):
            raise ValueError(f"{path}: size must be divisible by 2**len(widths)")
        return config

    def to_dict(self) -> dict:
        return asdict(self)
