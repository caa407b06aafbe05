"""The mouth generator's training options, apart from the training itself: the command line reads their
defaults without importing torch (every `callsynth` command builds the whole parser)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MouthTrainOptions:
    widths: list = field(default_factory=lambda: [8, 16, 32])
    blocks: list = field(default_factory=lambda: [32, 16, 8, 3])
    steps: int = 3000
    batch: int = 32
    lr: float = 2e-3
    inner_weight: float = 4.0        # L1 weight inside the target's inner lips (1 elsewhere)
    ssim_weight: float = 4.0
    teeth_weight: float = 4.0        # the share of teeth inside the inner lips, output against truth
    teeth_softness: float = 6.0      # width (levels of V and S) of the soft teeth threshold
    att_weight: float = 0.1
    adv_weight: float = 0.0          # L_adv of a PatchGAN on the patch and its inner-lip mask (0.05 hurt)
    open_share: float = 0.5          # share of each batch drawn from open-mouth samples (regions.OPEN_MOUTH)
    grid_s1_clips: int = 60
    max_frames: int = 300            # frames read of each clip
    every: int = 1                   # every n-th frame of a training clip is a sample
    colour_jitter: float = 0.15      # each sample's pictures (inputs and truth alike) get a random gain per
                                     # channel in 1 ± this and an offset: skin and lips other than the few here
    val_every: int = 250
    seed: int = 0
    threads: int = 2
