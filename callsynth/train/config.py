"""Training configuration: one JSON file, every field with a default.

Each field is checked as the file is read, against its default's kind: a step count of "many" or 0, a
weight of -1 or a misspelt loss name trained for minutes on the pairs and then failed, or trained with the
loss silently off."""

from __future__ import annotations

import json
import math
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
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a config is a JSON object of fields (see configs/), not a "
                             f"{type(raw).__name__}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        defaults = cls()
        for name, value in raw.items():
            _check_field(path, name, value, getattr(defaults, name))
        if "weights" in raw:       # a weight not named keeps its default: 0 turns a loss off
            raw = {**raw, "weights": {**defaults.weights, **raw["weights"]}}
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


# Fields that may be 0 (the others that count something are at least 1); `seed` may be any integer.
_MAY_BE_ZERO = {"lr_decay_start", "val_every", "grid_s1_clips", "other_clips", "portrait_people"}


def _check_field(path: Path, name: str, value, default) -> None:
    """ValueError naming the field unless `value` is of `default`'s kind and in its range."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and (
            name == "seed" or value >= (0 if name in _MAY_BE_ZERO else 1))
        want = "an integer" if name == "seed" else f"an integer >= {0 if name in _MAY_BE_ZERO else 1}"
    elif isinstance(default, float):
        ok, want = number(value) and value >= 0 and (value > 0 or name != "lr"), \
            "a number > 0" if name == "lr" else "a number >= 0"
    elif isinstance(default, str):
        ok, want = isinstance(value, str) and value != "", "a non-empty string"
    elif isinstance(default, list):
        ok = isinstance(value, list) and value != [] and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        want = "a list of integers >= 1"
    else:                                   # weights: loss name -> weight
        if not isinstance(value, dict):
            raise ValueError(f"{path}: {name} must be an object of loss weights, e.g. {json.dumps(default)}")
        unknown = sorted(set(value) - set(default))
        if unknown:
            raise ValueError(f"{path}: {name}: unknown losses {unknown} (known: {', '.join(default)})")
        for loss, weight in value.items():
            if not (number(weight) and weight >= 0):
                raise ValueError(f"{path}: {name}.{loss} must be a number >= 0, not {json.dumps(weight)}")
        return
    if not ok:
        raise ValueError(f"{path}: {name} must be {want}, not {json.dumps(value)}")
