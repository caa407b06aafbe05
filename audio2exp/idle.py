"""What a face does besides speaking: blinks every few seconds and a slow, small head motion that grows a
little with the voice. Deterministic for a seed, and a pure function of time, so a stream and a file
render agree."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from callsynth.face.pose import Pose

BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.04, 0.12


class IdleMotion:
    def __init__(self, seed: int = 0, blink_every_s: tuple = (2.0, 5.5), sway_rad: float = 0.025,
                 horizon_s: float = 3600.0):
        rng = np.random.default_rng(seed)
        gaps = rng.uniform(*blink_every_s, size=int(horizon_s / blink_every_s[0]) + 1)
        self.blinks = np.cumsum(gaps) - gaps[0] / 2
        self.freqs = rng.uniform(0.08, 0.35, size=(3, 2))
        self.phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
        self.sway = sway_rad * np.array([0.6, 1.0, 0.35])  # nod, turn, tilt

    def blink(self, t: float) -> float:
        """0 (open) to 1 (shut) at time t."""
        i = np.searchsorted(self.blinks, t) - 1
        if i < 0:
            return 0.0
        dt = t - self.blinks[i]
        if dt < BLINK_CLOSE_S:
            return dt / BLINK_CLOSE_S
        dt -= BLINK_CLOSE_S
        if dt < BLINK_HOLD_S:
            return 1.0
        dt -= BLINK_HOLD_S
        return max(0.0, 1.0 - dt / BLINK_OPEN_S)

    def head(self, t: float, rest: Pose, loudness: float = 0.0) -> Pose:
        """The rest pose turned by a slow sway; `loudness` in [0, 1] adds a small nod."""
        angles = (self.sway[:, None] * np.sin(2 * np.pi * self.freqs * t + self.phases)).sum(1) / 2
        angles[0] += 0.02 * float(np.clip(loudness, 0, 1))
        rot = Rotation.from_rotvec(rest.rotvec) * Rotation.from_euler("xyz", angles)
        return Pose(rot.as_rotvec(), rest.translation.copy(), rest.scale)
