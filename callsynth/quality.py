"""Adaptive quality: how often a costly step runs on a stream of frames, chosen from what it really costs
on this machine, so that a slow or busy machine keeps its frame rate instead of falling behind.

The receiver's costly step on the frame's path is the mouth generator (under the full-frame generator,
which repairs the still beside the frames at the pace `RepairPacing` sets, or as the chosen model): a
machine that cannot run it at the display rate steps down — every 2nd, then every 4th frame with the warp
between, then the warp alone — and back up when the measured costs allow. At the warp alone the network
is tried now and then (every 5 s, backing off to a minute while it stays too slow) so that a machine that
got faster, or less busy, is noticed: the caller runs that probe beside the frames, not in their path
(`probe_due`, `record_probe`), since on a machine too slow for a network a probe on the frame's path held
the picture for its whole cost (100-170 ms for the full-frame generator on a 2-core EPYC). The sender's
costly step is tracking: when tracking every frame does not fit the camera's rate, it tracks only the
frames it sends. Every step is kept with its time and reason for STATS.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

RENDER_LEVELS = (1, 2, 4, 0)   # the network repairs every Nth frame; 0: never, the warp alone
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
    _probing: bool = False
    probes: int = 0                         # probes whose cost came back (record_probe)
    probes_started: int = 0

    def __post_init__(self):
        self.probing = 0 in self.levels and len(self.levels) > 1    # the level "never" is probed out of
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
        """Whether the costly step (the generator, tracking) runs on the next frame (never at level 0:
        there it is only probed, off the frame's path)."""
        every = self.every
        self._count += 1
        return bool(every) and (self._count - 1) % every == 0

    def probe_due(self) -> bool:
        """At level 0 (the costly step never runs): whether to try it once now, beside the frames. The
        caller runs it off the frame's path and hands its cost to `record_probe`; no other probe is due
        until then."""
        if self.every or not self.probing or self._probing or self._probe_at is None or self.clock() < self._probe_at:
            return False
        self._probe_at, self._probing = None, True
        self.probes_started += 1
        return True

    def record_probe(self, ms: float | None) -> dict | None:
        """A probe's cost (None: it failed): the newest knowledge of what the costly step costs (it is
        rare). Steps up to the best level that would fit, else the next probe waits twice as long (up to
        PROBE_MAX_S); returns the step taken, if any."""
        steps = len(self.steps)
        self._probing = False
        now = self.clock()
        if ms is not None:
            self.probes += 1
            self.cost_ms[True] = ms
            # straight to the best level that fits (a probe is a measurement, not a guess)
            fits = self._first_fitting(range(self.level), 0.8 * self.budget_ms)
            if fits is not None:
                self._probe_wait = PROBE_FIRST_S
                self._change(fits, now, f"a probe cost {ms:.0f} ms: frames would cost "
                                        f"{self.expected_ms(self.levels[fits]):.0f} ms, inside the "
                                        f"{self.budget_ms:.0f} ms budget")
        if len(self.steps) == steps and (ms is None or self.probes > 1):
            # too slow (or failed): wait longer; the first probe is retried as soon as usual, as it also
            # paid the network's first run
            self._probe_wait = min(PROBE_MAX_S, self._probe_wait * 2)
        self._schedule_probe(now)
        return self.steps[-1] if len(self.steps) > steps else None

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
        old = self.cost_ms[repaired]
        self.cost_ms[repaired] = ms if old is None else (1 - SMOOTHING) * old + SMOOTHING * ms
        self.frames[repaired] += 1
        now = self.clock()
        current = self.expected_ms(self.every)
        self._over = self._over + 1 if current > self.budget_ms else 0
        if self._over >= self.patience and self.level < len(self.levels) - 1:
            target = self._first_fitting(range(self.level + 1, len(self.levels)), self.budget_ms)
            self._change(len(self.levels) - 1 if target is None else target, now,
                         f"frames cost {current:.0f} ms, over the {self.budget_ms:.0f} ms a "
                         f"frame may take at {self.fps:.0f} fps")
        else:
            self._step_up(now)
        self._schedule_probe(now)
        return self.steps[-1] if len(self.steps) > steps else None

    def _first_fitting(self, indices, limit_ms: float) -> int | None:
        """The first level index of `indices` whose frames would cost at most `limit_ms`, or None."""
        return next((i for i in indices if self.expected_ms(self.levels[i]) <= limit_ms), None)

    def _step_up(self, now: float) -> None:
        """One level up when its frames would cost at most 80 % of the budget and the ladder has been at
        this level STEP_UP_AFTER_S."""
        if self.level == 0 or now - self._changed_at < STEP_UP_AFTER_S:
            return
        above = self.expected_ms(self.levels[self.level - 1])
        if above <= 0.8 * self.budget_ms:
            self._probe_wait = PROBE_FIRST_S
            self._change(self.level - 1, now, f"frames would cost {above:.0f} ms, inside the "
                                              f"{self.budget_ms:.0f} ms budget")

    def _schedule_probe(self, now: float) -> None:
        if self.every == 0 and self.probing and self._probe_at is None and not self._probing:
            self._probe_at = now + self._probe_wait

    def _change(self, level: int, now: float, why: str) -> None:
        """To `level`, kept in `steps` with the time, the frames recorded before it and the reason."""
        self.level, self._changed_at, self._over = level, now, 0
        self.steps.append({"t_s": round(now - self.started, 2), "frame": self.frames[True] + self.frames[False],
                           "now": self.now, "why": why})

    def summary(self) -> dict:
        return {"now": self.now, "steps": self.steps,
                "frames_costly": self.frames[True], "frames_cheap": self.frames[False], "probes": self.probes,
                "probes_started": self.probes_started,
                "ms": {"costly": _ms(self.cost_ms[True]), "cheap": _ms(self.cost_ms[False])},
                "budget_ms": round(self.budget_ms, 1)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class RepairPacing:
    """When the receiver's full-frame generator may next repair the still beside the frames
    (receiver.generator_renderer.GeneratorRenderer.repair_still, run in a niced thread): at most one at a
    time, no sooner than `every` display frames after the last one began, and no more often than keeps
    its wall time to `share` of the time between starts. Its wall time counts the turns the frames take
    from it on a busy machine, so a starved repair slows its own pace rather than the frames'."""

    fps: float
    every: int
    share: float = 0.5
    clock: object = time.monotonic
    failed: int = 0
    wall_ms: list = field(default_factory=list)     # of each repair done
    cpu_ms: list = field(default_factory=list)
    _running: bool = False
    _next_at: float | None = None
    _starts: list = field(default_factory=list)     # when each repair began

    @property
    def started(self) -> int:
        return len(self._starts)

    @property
    def repairs(self) -> int:
        """Repairs done (their cost came back)."""
        return len(self.wall_ms)

    def due(self) -> bool:
        """Whether to begin a repair now; the caller then runs it and hands its cost to `done`."""
        now = self.clock()
        if self._running or (self._next_at is not None and now < self._next_at):
            return False
        self._running = True
        self._starts.append(now)
        return True

    def done(self, wall_ms: float | None, cpu_ms: float | None = None, slower: float = 1.0) -> None:
        """A repair's cost (None: it failed, and the next waits as long as after a repair). `slower`: how
        many times longer to wait while the frames themselves have had to give way (the frame's ladder
        below its best level): a busy machine's frames, and a two-way call's own sending, come first."""
        self._running = False
        if wall_ms is None:
            self.failed += 1
            wall_ms = 0.0
        else:
            self.wall_ms.append(wall_ms)
            if cpu_ms is not None:
                self.cpu_ms.append(cpu_ms)
        self._next_at = self._starts[-1] + slower * max(self.every / self.fps, wall_ms / 1000 / self.share)

    def describe(self) -> str:
        interval = self.interval_s()
        if not self.repairs or interval is None:
            return f"the still repaired by the generator {self.repairs} time(s)"
        return f"the still repaired by the generator every {interval:.2f} s"

    def interval_s(self) -> float | None:
        """The mean time between the starts of two repairs so far."""
        return float(np.mean(np.diff(self._starts))) if len(self._starts) > 1 else None

    def summary(self) -> dict:
        interval = self.interval_s()
        return {"every_frames": self.every, "started": self.started, "repairs": self.repairs, "failed": self.failed,
                "running": self._running,
                "interval_s": None if interval is None else round(interval, 3),
                "ms": {"wall": _ms(float(np.median(self.wall_ms)) if self.wall_ms else None),
                       "cpu": _ms(float(np.median(self.cpu_ms)) if self.cpu_ms else None)}}
