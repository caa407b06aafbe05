"""The figures behind the speech-driven face's README paragraphs, printed by one command:

- eyes: between blinks, the eye opening of the target landmarks a GRID sentence drives (held-out speaker
  lbax4n on images/london_neutral/002_03.jpg), as a share of the still's, with the eyes held
  (Audio2ExpModel.hold_eyes, as shipped) and unheld; and the lip gap's correlation between the two;
- teeth: `callsynth audio2exp` on the same sentence and still, alone and with the same woman's smiling
  picture as a reference: open-mouth frames and their mean teeth share (MediaPipe on the output);
- identity: dlib's cosine between the neutral and smiling pictures of one person, and the highest between
  two people, over the first N people of images/london_* (what SAME_PERSON in talking_face.py rests on).

    python scripts/speech_face_figures.py [--people 30]
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio2exp.driver import SpeechDriver
from audio2exp.features import load_audio
from audio2exp.model import load_model
from callsynth.eval.metrics import face_descriptor, open_mouth_teeth
from callsynth.face.basis import load_basis
from callsynth.face.regions import eye_openness, lip_gap
from callsynth.face.still import prepare_still
from callsynth.machine import cpu_description
from callsynth.media import read_still
from callsynth.split import data_root
from callsynth.talking_face import SAME_PERSON, render_talking_face
from receiver.renderer import Renderers

SENTENCE = "video/grid_misc/lbax4n.mp4"
NEUTRAL, SMILING = "images/london_neutral/002_03.jpg", "images/london_smiling/002_08.jpg"


def eyes(data: Path, basis) -> None:
    still = prepare_still(read_still(data / NEUTRAL))
    renderer = Renderers(basis, "warp")(still)
    samples = load_audio(data / SENTENCE)
    rest = np.mean(eye_openness(still.landmarks))
    gaps = {}
    for held in (True, False):
        model = load_model(basis=basis)
        if not held:
            model.hold_eyes = None
        driver = SpeechDriver(model, renderer.rest_pose, 30.0)
        opening, gap = [], []
        for t, pose, code in driver.offline(samples):
            if driver.idle.blink(t) == 0:
                target = renderer.target_landmarks(pose, code)
                opening.append(np.mean(eye_openness(target)) / rest)
                gap.append(lip_gap(target))
        gaps[held] = np.array(gap)
        print(f"eyes {'held  ' if held else 'unheld'}: opening between blinks, share of the still's: "
              f"min {min(opening):.2f}, median {np.median(opening):.2f} ({len(opening)} frames); "
              f"widest lip gap {max(gap):.3f}")
    print(f"lip gap, held vs unheld: Pearson r {np.corrcoef(gaps[True], gaps[False])[0, 1]:.3f}")


def teeth(data: Path, basis) -> None:
    still = prepare_still(read_still(data / NEUTRAL))
    model = load_model(basis=basis)
    with tempfile.TemporaryDirectory() as tmp:
        smiling = prepare_still(read_still(data / SMILING))
        for name, refs in (("still alone", []), (f"with {SMILING}", [smiling])):
            out = Path(tmp) / "out.mp4"
            render_talking_face(data / SENTENCE, still, basis, model, out, progress=False, references=refs)
            frames, share = open_mouth_teeth(out)
            print(f"teeth, {name}: {frames} open-mouth frames, mean teeth share {share:.2f}")


def identity(data: Path, people: int) -> None:
    pictures = {kind: {p.name.split("_")[0]: p for p in (data / f"images/london_{kind}").glob("*.jpg")}
                for kind in ("neutral", "smiling")}          # 002_03.jpg and 002_08.jpg: person 002
    names = sorted(set(pictures["neutral"]) & set(pictures["smiling"]))[:people]
    desc = {}
    for name in names:
        for kind in ("neutral", "smiling"):
            d = face_descriptor(np.asarray(read_still(pictures[kind][name])))
            if d is not None:
                desc[(name, kind)] = d
    same = [float(desc[(n, "neutral")] @ desc[(n, "smiling")]) for n in names
            if (n, "neutral") in desc and (n, "smiling") in desc]
    other = [float(desc[a] @ desc[b]) for a, b in itertools.combinations(desc, 2) if a[0] != b[0]]
    print(f"identity cosine over {len(names)} people: one person (neutral vs smiling) {min(same):.2f}-"
          f"{max(same):.2f}; two people at most {max(other):.2f} ({len(other)} pairs); SAME_PERSON "
          f"{SAME_PERSON}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=30, help="people of images/london_* for the identity "
                        "figures (default 30)")
    args = parser.parse_args()
    data, basis = data_root(), load_basis()
    print(f"on {cpu_description()}")
    eyes(data, basis)
    teeth(data, basis)
    identity(data, args.people)


if __name__ == "__main__":
    main()
