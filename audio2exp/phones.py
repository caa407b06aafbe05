"""Phone labels of training speech, from pocketsphinx's phone decoder (its PyPI wheel ships an en-us model
trained on many speakers), at the feature frame rate.

The mouth network learns from a corpus that is mostly one speaker; naming the phone under every frame of
its window as a second task asks its convolutions for what pocketsphinx's model found to hold across
speakers. Only training uses them: decoding costs ~3 ms per 40 ms of audio on a 2-core EPYC, more than a
streaming frame's whole budget, so the call never runs the decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callsynth.cache import cache_root, file_key
from callsynth.tool_options import TOOLS
from callsynth.train.sample_cache import load_cached, run_jobs, save_cached

from .features import HOP, SAMPLE_RATE, load_audio

# CMU phones as pocketsphinx names them; SIL (and its noise symbols) is class 0
PHONES = ["SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
          "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW",
          "V", "W", "Y", "Z", "ZH"]
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
# Mouth shapes (visemes): phones the lips and jaw make alike share a class, so that the second task asks for
# what a face shows rather than for what only the tongue or the voice tells apart
VISEMES = ["SIL", "P B M", "F V", "TH DH", "T D N L", "S Z", "CH JH SH ZH", "K G NG HH Y", "R ER",
           "W UW UH OW OY AO AW", "AA AE AH AY", "EH EY IH IY"]
VISEME_OF_PHONE = np.array([next(i for i, group in enumerate(VISEMES) if phone in group.split())
                            for phone in PHONES], np.int64)
CACHE_VERSION = 3
SILENT_RMS = 1e-4          # -80 dB of full scale: no voice at all


def _cached_at(path: Path) -> Path:
    return cache_root() / "phones" / f"{file_key(path, CACHE_VERSION)}.npz"


def decode_phones(samples: np.ndarray) -> np.ndarray:
    """(frames,) phone class per 10 ms frame of 16 kHz audio, by pocketsphinx's phone-loop decoder."""
    import pocketsphinx
    from pocketsphinx import Decoder

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    decoder = Decoder(samprate=SAMPLE_RATE, allphone=str(model / "en-us-phone.lm.bin"), loglevel="FATAL",
                      beam=1e-20, pbeam=1e-20, lw=2.0)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    labels = np.zeros(len(samples) // HOP + 1, np.int8)
    for seg in decoder.seg():
        labels[seg.start_frame:seg.end_frame + 1] = PHONE_INDEX.get(seg.word, 0)
    # the decoder names phones in digital silence too (its normalisation has nothing to work on)
    frames = np.pad(samples, (0, len(labels) * HOP - len(samples)))[:len(labels) * HOP].reshape(-1, HOP)
    labels[np.sqrt(np.mean(frames ** 2, axis=1)) < SILENT_RMS] = 0
    return labels


def phones_of(path: str | Path) -> np.ndarray:
    """The phone labels of a file's audio, decoded once and cached beside the landmark cache."""
    path = Path(path)
    hit = load_cached(_cached_at(path))
    if hit is not None:
        return hit["labels"]
    labels = decode_phones(load_audio(path))
    save_cached(_cached_at(path), {"labels": labels})
    return labels


def _job(path: str) -> tuple[str, np.ndarray]:
    return path, phones_of(path)


def phones_many(paths, workers: int = TOOLS.workers) -> dict[str, np.ndarray]:
    """phones_of for many files, the undecoded ones in parallel processes, with a progress bar."""
    run_jobs(_job, [str(p) for p in paths if not _cached_at(Path(p)).exists()], workers, "phones")
    return {str(p): phones_of(p) for p in paths}
