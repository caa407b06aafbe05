"""The identity split of ../shared/data: which files are validation people, which are training data."""

from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path


def data_root() -> Path:
    """../shared/data beside the checkout, or $CALLSYNTH_DATA."""
    env = os.environ.get("CALLSYNTH_DATA")
    if env:
        if not (Path(env) / "manifest.csv").is_file():
            raise FileNotFoundError(f"CALLSYNTH_DATA={env} holds no manifest.csv: it should name the training "
                                    "media's folder (../shared/data)")
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for base in (here, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no ../shared/data found beside the checkout; set CALLSYNTH_DATA")


def _split() -> dict:
    return json.loads((resources.files("callsynth") / "assets" / "identity_split.json").read_text())


def validation_people() -> dict[str, list[str]]:
    """Each validation person and their files (relative to the data root)."""
    return _split()["validation"]


def validation_files() -> set[str]:
    return {f for files in _split()["validation"].values() for f in files}


def eval_clips(root: Path | None = None) -> list[Path]:
    root = root or data_root()
    return [root / f for f in _split()["eval_clips"]]


def selection_files(root: Path | None = None) -> list[Path]:
    """Training clips of people held out of the mouth generator's training, on which it chooses its kept
    step: the validation people stay unseen by every choice."""
    root = root or data_root()
    return [root / f for f in _split()["selection"]["files"]]


def manifest(root: Path | None = None) -> list[dict]:
    root = root or data_root()
    with open(root / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def training_files(kind: str, root: Path | None = None) -> list[Path]:
    """Training files of one kind ('video' or 'image'): everything not of a validation person."""
    root = root or data_root()
    held = validation_files()
    return [root / row["file"] for row in manifest(root)
            if row["kind"] == kind and row["file"] not in held]


def portrait_pairs(root: Path | None = None) -> list[tuple[Path, Path]]:
    """(neutral, smiling) studio portraits of one person each, from the London set: the files of a person
    share their number (`001_03.jpg` neutral, `001_08.jpg` smiling)."""
    by_person: dict[tuple[str, str], Path] = {}
    for path in training_files("image", root):
        if path.parent.name in ("london_neutral", "london_smiling"):
            by_person[(path.parent.name, path.name.split("_")[0])] = path
    return [(path, by_person[("london_smiling", person)])
            for (folder, person), path in sorted(by_person.items())
            if folder == "london_neutral" and ("london_smiling", person) in by_person]


def audio_validation_files() -> dict[str, list[str]]:
    """{'grid': [...], 'other': [...]}: speakers audio2exp never trains on."""
    held = _split()["audio2exp_validation"]
    return {"grid": held["grid"], "other": held["other"]}


def audio_training_files(root: Path | None = None) -> list[Path]:
    """Clips with clean audio of people in neither validation set (the masked-audio GRID clips left out)."""
    root = root or data_root()
    held = validation_files() | {f for files in audio_validation_files().values() for f in files}
    return [root / row["file"] for row in manifest(root)
            if row["kind"] == "video" and row["audio"] == "1" and row["file"] not in held
            and not Path(row["file"]).name.startswith(("800ms_", "1600ms_"))]
