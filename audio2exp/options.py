"""audio2exp's training options in one place, light enough for the command line to read without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainOptions:
    """How audio2exp trains; `callsynth audio2exp-train` reads its defaults from here."""
    epochs: int = 10
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0
    max_clips: int | None = None      # the first N training clips only (quick runs)
    # GRID s1 is 92 % of the speech but one voice; the other speakers' clips are drawn this many times as
    # often as their share. 1: no more often. Drawn 8x (before 2026-12-01) or 16x, the network learnt their
    # 4 minutes by heart and followed spontaneous speech of unseen people less (README, audio2exp).
    other_speakers_x: int = 1
    # weight of the phone task (audio2exp/phones.py) beside the mouth loss; 0: mouth codes alone
    phone_weight: float = 0.0
    # what that task names: "phones" (pocketsphinx's 40) or "visemes" (12 mouth shapes, phones.VISEMES)
    phone_set: str = "phones"
    # the lip gap's squared error (inner lips' middle, upper to lower) counted this many times beside the
    # mouth landmarks' (55 points): the opening is what a listener reads off the lips and what is measured
    gap_weight: float = 55.0
    # the share of training windows drawn from the clip with music, noise or another voice mixed under it
    # (audio2exp/backgrounds.py), at an SNR drawn from `background_snr_db`; 0: clean speech only
    background_share: float = 0.5
    background_snr_db: tuple[float, float] = (5.0, 25.0)
    # regularisation: dropout before the head's first layer, after each convolution (0: none), and AdamW's
    # weight decay. More of either did not carry to unseen spontaneous speech (README, audio2exp: the table).
    dropout: float = 0.2
    conv_dropout: float = 0.0
    weight_decay: float = 1e-4


A2E_TRAIN = TrainOptions()
