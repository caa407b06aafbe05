"""How well speech drives the mouth, on speakers audio2exp never trained on.

- mouth opening: Pearson correlation of predicted and true lip gap (both from landmark codes);
- bilabials: share of the closure frames of each p, b or m that the prediction shows with lips closed (phone
  times from pocketsphinx aligning the clip's known words: GRID file names spell the sentence, and GRID
  .align files give the words);
- delay: the look-ahead the network waits for plus the measured time to compute one frame."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.landmark_cache import track_many
from callsynth.machine import one_blas_thread

from .dataset import Clip, SilentTrack, build_clip
from .features import SAMPLE_RATE, load_audio
from .model import LOOKAHEAD_MS, Audio2ExpModel
from .stream import StreamingMouth, offline_codes
from .targets import gap_of_code

BILABIALS = {"P", "B", "M"}
# The lips close before a p/b/m is heard: the closure is nearly silent and aligners put the phone's
# start near the release burst. The closure frames are those in the 100 ms before that start (on GRID
# s1, a training speaker, the real lips are closed in 89 % of them; inside the aligned phone, in 55 %).
CLOSURE_BEFORE_ONSET_S = 0.10
CLOSED_MARGIN = 0.05   # lips closed: gap within 5 % of the eye distance of the closed mouth
GRID_CODES = [
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
    None,  # the letter itself
    {"z": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
     "7": "seven", "8": "eight", "9": "nine"},
    {"a": "again", "n": "now", "p": "please", "s": "soon"},
]


def grid_words(path: Path) -> list[str] | None:
    """The sentence a GRID file name spells (e.g. ..._bbaf2n → bin blue at f two now), or None."""
    code = Path(path).stem.split("_")[-1]
    if len(code) != 6:
        return None
    words = []
    for char, table in zip(code, GRID_CODES):
        word = char if table is None else table.get(char)
        if word is None:
            return None
        words.append(word)
    return words


def align_words(path: Path) -> list[str]:
    """Words of a GRID .align file (start end word, times in 1/25000 s), silences left out."""
    return [line.split()[2] for line in Path(path).read_text().splitlines()
            if len(line.split()) == 3 and line.split()[2] not in ("sil", "sp")]


def phone_segments(samples: np.ndarray, words: list[str]) -> list[tuple[str, float, float]]:
    """(phone, start s, end s) by pocketsphinx forced alignment of `words` to the audio.

    The phone-level second pass sometimes fails to finish; then each aligned word's time is shared
    evenly among the phones of its dictionary pronunciation."""
    from pocketsphinx import Decoder

    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    decoder.set_align_text(" ".join(words))
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    word_times = [(seg.word, seg.start_frame, seg.end_frame + 1) for seg in decoder.seg()
                  if not seg.word.startswith(("<", "["))]
    try:
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return [(phone.name, phone.start / 100, (phone.start + phone.duration) / 100)
                for word in decoder.get_alignment() for phone in word]
    except RuntimeError:
        out = []
        for word, start, end in word_times:
            phones = (decoder.lookup_word(word.split("(")[0]) or "").split()
            edges = np.linspace(start, end, len(phones) + 1) / 100
            out += [(p, float(a), float(b)) for p, a, b in zip(phones, edges[:-1], edges[1:])]
        return out


@dataclass
class MouthGaps:
    """A held-out clip's lip gap frame by frame: tracked in its video (`true`) and predicted from its sound
    (`predicted`), over the frames both have; `valid`: frames whose tracking counts; `rest`: the closed
    mouth's gap (the zero code)."""

    samples: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    valid: np.ndarray
    rest: float

    @property
    def pearson(self) -> float:
        """The mouth-opening figure: predicted against true lip gap over the valid frames."""
        return float(np.corrcoef(self.true[self.valid], self.predicted[self.valid])[0, 1])


def mouth_gaps(model: Audio2ExpModel, basis: ExpressionBasis, path: Path, landmarks, fps) -> MouthGaps | None:
    """The true and predicted lip gap of a clip (None when it gives no clip: build_clip)."""
    clip = build_clip(path, landmarks, fps, basis)
    return None if clip is None else gaps_of(model, basis, clip, load_audio(path))


def gaps_of(model: Audio2ExpModel, basis: ExpressionBasis, clip: Clip, samples: np.ndarray) -> MouthGaps:
    """The true lip gap of `clip` and the one predicted from `samples` (its own sound, or another sound
    over its pictures: scripts/speech_under_sound.py)."""
    _, pred = offline_codes(model, samples, clip.fps)
    n = min(len(pred), len(clip.codes))
    return MouthGaps(samples, gap_of_code(clip.codes[:n], clip.reference, basis),
                     gap_of_code(pred[:n], clip.reference, basis), clip.valid[:n],
                     float(gap_of_code(np.zeros(basis.k), clip.reference, basis)))


def evaluate_clip(model: Audio2ExpModel, basis: ExpressionBasis, path: Path, landmarks, fps,
                  words: list[str] | None, gaps: dict | None = None) -> dict | None:
    """The clip's row of the report; its MouthGaps and frame rate go into `gaps` (by clip) when given."""
    g = mouth_gaps(model, basis, path, landmarks, fps)
    if g is None:
        return None
    if gaps is not None:
        gaps[str(path)] = (g, fps)
    row = {"clip": str(path), "frames": int(g.valid.sum()), "pearson": g.pearson}
    if words:
        onsets = [s for p, s, _ in phone_segments(g.samples, words) if p in BILABIALS]
        times = np.arange(len(g.valid)) / fps
        inside = np.zeros(len(g.valid), bool)
        for s in onsets:
            inside |= (times >= s - CLOSURE_BEFORE_ONSET_S) & (times < s)
        inside &= g.valid
        if inside.any():
            row["bilabial_frames"] = int(inside.sum())
            row["bilabial_closed_pred"] = float(np.mean(g.predicted[inside] <= g.rest + CLOSED_MARGIN))
            row["bilabial_closed_true"] = float(np.mean(g.true[inside] <= g.rest + CLOSED_MARGIN))
    return row


def measure_delay(model: Audio2ExpModel, fps: float = 30.0, seconds: float = 5.0, runs: int = 5) -> dict:
    """Streaming compute per output frame, pushing 20 ms of (synthetic, speech-like) audio at a time: all
    the time the pushes took, those that gave no frame too, over the frames they gave; numpy on one thread,
    as in a call (callsynth.machine.share_cores). The median of `runs` streams, and their range: a
    machine shared with others (a cloud VM, a laptop's background work) varied by half from one second
    to the next."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
             0.01 * rng.standard_normal(len(t))).astype(np.float32)
    StreamingMouth(model, fps).push(audio[:SAMPLE_RATE // 2])     # one-off start-up (the mel filters)
    chunk = SAMPLE_RATE // 50
    per_run = []
    with one_blas_thread():
        for _ in range(runs):
            stream = StreamingMouth(model, fps)
            spent, frames = 0.0, 0
            for i in range(0, len(audio), chunk):
                start = time.perf_counter()
                frames += len(stream.push(audio[i:i + chunk]))
                spent += time.perf_counter() - start
            per_run.append(spent * 1000 / max(1, frames))
    compute = float(np.median(per_run))
    return {"lookahead_ms": round(LOOKAHEAD_MS, 1), "compute_ms_per_frame": round(compute, 2),
            "compute_ms_range": [round(min(per_run), 2), round(max(per_run), 2)], "runs": runs,
            "chunk_ms": 20, "delay_ms": round(LOOKAHEAD_MS + compute, 1)}


def evaluate(model: Audio2ExpModel, basis: ExpressionBasis, clips: list[Path],
             align_dir: Path | None = None, log=print, gaps: dict | None = None) -> dict:
    """Per-clip rows, each group's summary, the delay, and the clips given but not measured (each with
    why): a target is met only on what was measured, so the command counts each of those as a miss.
    `gaps`: a dict to fill with each measured clip's (MouthGaps, fps): the true and predicted lip gap."""
    tracked = track_many(clips, desc="landmarks")
    rows, not_measured = [], []
    for path in clips:
        item = tracked.get(str(path))
        if item is None:
            not_measured.append({"clip": str(path), "why": "not read, or no face tracked in it"})
            continue
        words = None
        if align_dir is not None and (Path(align_dir) / f"{Path(path).stem}.align").exists():
            words = align_words(Path(align_dir) / f"{Path(path).stem}.align")
        elif "grid" in str(path):
            words = grid_words(Path(path))
        try:
            row = evaluate_clip(model, basis, Path(path), item["landmarks"], item["fps"], words, gaps)
        except SilentTrack as e:
            log(f"left out: {e}")
            not_measured.append({"clip": str(path), "why": "its sound is digital zero throughout"})
            continue
        if row is None:
            not_measured.append({"clip": str(path), "why": "no sound, or a face in fewer than 10 frames"})
        else:
            rows.append(row)
    summary = {name: _summarise(group) for name, group in clip_groups(rows).items() if group}
    summary["delay"] = measure_delay(model)
    return {"summary": summary, "per_clip": rows, "not_measured": not_measured}


def clip_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Per-clip rows by the summary they count in: all, GRID speakers (read sentences), the others
    (interviews: spontaneous speech)."""
    return {"all": rows, "grid": [r for r in rows if _is_grid(r["clip"])],
            "other": [r for r in rows if not _is_grid(r["clip"])]}


def _is_grid(path: str) -> bool:
    return "grid" in Path(path).parent.name


def _summarise(rows: list[dict]) -> dict:
    bil = [r for r in rows if "bilabial_frames" in r]
    frames = sum(r["bilabial_frames"] for r in bil)

    def weighted(key):
        return sum(r[key] * r["bilabial_frames"] for r in bil) / frames if frames else float("nan")

    return {"clips": len(rows), "pearson_mean": float(np.mean([r["pearson"] for r in rows])),
            "bilabial_frames": frames, "bilabial_closed_pred": weighted("bilabial_closed_pred"),
            "bilabial_closed_true": weighted("bilabial_closed_true")}
