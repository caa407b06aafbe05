"""Adaptive quality: how often a costly step runs on a stream of frames, chosen from what it really costs
on this machine, so that a slow or busy machine keeps its frame rate instead of falling behind.

The receiver's costly step is the generator: a machine that cannot run it at the display rate steps down —
the generator on every 2nd, then every 4th frame with the warp between, then the warp alone — and back up
when the measured costs allow. Under the full-frame generator a second ladder of the same kind runs the
mouth generator on the frames between (receiver/frame_clock.py). At the warp alone the generator is tried on one frame now and then (every
5 s, backing off to a minute while it stays too slow) so that a machine that got faster, or less busy, is
noticed. The sender's costly step is tracking: when tracking every frame does not fit the camera's rate,
it tracks only the frames it sends. Every step is kept with its time and reason for STATS.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

RENDER_LEVELS = (1, 2, 4, 0)   # the generator repairs every Nth frame; 0: never, the warp alone
FRAME_SHARE = 0.8           # a frame's rendering may take this share of the display period
STEP_UP_AFTER_S = 3.0       # at least this long at one level before stepping up
PROBE_FIRST_S, PROBE_MAX_S = 5.0, 60.0
SMOOTHING = 0.3             # weight of the newest cost in the running estimate


def describe_render(every: int) -> str:
    return "warp only" if every == 0 else "generator every frame" if every == 1 else \
        f"generator every {every} frames, warp between"


def describe_mouth(every: int) -> str:
    """The mouth generator's ladder, on the frames the full-frame generator leaves to it."""
    return "warp only" if every == 0 else "mouth generator every frame" if every == 1 else \
        f"mouth generator every {every} frames, warp between"


def describe_tracking(every: int) -> str:
    return "tracking every frame" if every == 1 else f"tracking 1 frame in {every}"


@dataclass
class QualityLadder:
    """`levels`: the costly step runs on every Nth frame, best first (0: never); `describe` names one."""

    fps: float
    levels: tuple = RENDER_LEVELS
    describe: object = describe_render
    clock: object = time.monotonic
    patience: int = 1                       # frames in a row over the budget before stepping down
    level: int = 0
    cost_ms: dict = field(default_factory=lambda: {True: None, False: None})   # repaired?, running mean
    frames: dict = field(default_factory=lambda: {True: 0, False: 0})
    steps: list = field(default_factory=list)
    _count: int = 0
    _over: int = 0
    _changed_at: float | None = None
    _probe_at: float | None = None
    _probe_wait: float = PROBE_FIRST_S

    def __post_init__(self):
        self.probes = 0 in self.levels and len(self.levels) > 1
        self.budget_ms = FRAME_SHARE * 1000.0 / self.fps
        self.started = self.clock()
        self._changed_at = self.started

    @property
    def every(self) -> int:
        return self.levels[self.level]

    @property
    def now(self) -> str:
        """The current level, in words."""
        return self.describe(self.every)

    def costly_next(self) -> bool:
        """Whether the costly step (the generator, tracking) runs on the next frame."""
        every = self.every
        self._count += 1
        if every:
            return (self._count - 1) % every == 0
        if self.probes and self._probe_at is not None and self.clock() >= self._probe_at:
            self._probe_at = None
            return True
        return False

    def expected_ms(self, every: int) -> float:
        """What a frame costs on average at this level, from the costs measured so far."""
        g, w = self.cost_ms[True], self.cost_ms[False]
        if every == 0:
            return w or 0.0
        if g is None:
            return 0.0
        w = w if w is not None else g / 6   # before any cheap frame: the generator's usual ratio to the warp
        return (g + (every - 1) * w) / every

    def record(self, repaired: bool, ms: float) -> dict | None:
        """One frame done, with the costly step (`repaired`) or without, in `ms`; returns the step taken
        (an entry of `steps`) when this changed the level, else None."""
        steps = len(self.steps)
        was_warp_only = self.every == 0
        old = self.cost_ms[repaired]
        probe = repaired and was_warp_only      # a rare sample: the newest is the best knowledge
        self.cost_ms[repaired] = ms if old is None or probe else (1 - SMOOTHING) * old + SMOOTHING * ms
        self.frames[repaired] += 1
        now = self.clock()
        current = self.expected_ms(self.every)
        self._over = self._over + 1 if current > self.budget_ms else 0
        if self._over >= self.patience and self.level < len(self.levels) - 1:
            target = next((i for i in range(self.level + 1, len(self.levels))
                           if self.expected_ms(self.levels[i]) <= self.budget_ms), len(self.levels) - 1)
            self._change(target, now, f"frames cost {current:.0f} ms, over the {self.budget_ms:.0f} ms a "
                                      f"frame may take at {self.fps:.0f} fps")
        elif self.level > 0 and now - self._changed_at >= STEP_UP_AFTER_S:
            above = self.expected_ms(self.levels[self.level - 1])
            if above <= 0.8 * self.budget_ms:
                self._probe_wait = PROBE_FIRST_S
                self._change(self.level - 1, now, f"frames would cost {above:.0f} ms, inside the "
                                                  f"{self.budget_ms:.0f} ms budget")
        if self.every == 0 and self.probes and self._probe_at is None:
            if repaired and was_warp_only:    # a probe that did not earn a step up: wait longer
                self._probe_wait = min(PROBE_MAX_S, self._probe_wait * 2)
            self._probe_at = now + self._probe_wait
        return self.steps[-1] if len(self.steps) > steps else None

    def _change(self, level: int, now: float, why: str) -> None:
        self.level, self._changed_at, self._over = level, now, 0
        self.steps.append({"t_s": round(now - self.started, 2), "now": self.now, "why": why})

    def summary(self) -> dict:
        return {"now": self.now, "steps": self.steps,
                "frames_costly": self.frames[True], "frames_cheap": self.frames[False],
                "ms": {"costly": _ms(self.cost_ms[True]), "cheap": _ms(self.cost_ms[False])},
                "budget_ms": round(self.budget_ms, 1)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
