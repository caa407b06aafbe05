"""Which pose and code to show at a given time, from the packets received so far.

Between two packets it interpolates; past the newest one it extrapolates along the last two for a short
while (a late or lost packet), then holds; when the sender reports no face, or nothing arrives for long,
it holds a moment, then eases back to the still's own pose and a neutral (zero) code. The expression's
mouth cue (its last two elements: a choice of picture, an entry of the interior codebook) is never blended:
a frame takes the nearer packet's. When a packet ends a stretch of concealed frames, the face moves from
where concealment left it to where the packets say over CATCH_UP_MS rather than jumping there (CatchUp);
when the voice takes over from packets that stopped, or packets take over again, over SWITCH_MS
(SourceSwitch).
"""

from __future__ import annotations

import bisect

import numpy as np

from callsynth.face.code import CUE
from callsynth.face.pose import Pose, interpolate_pose
from callsynth.wire import FrameFeatures


# After concealment, the face reaches the packets' motion over this much of the timeline: two frames shown
# at 30 a second. With a packet every 10 frames (the 16 kbps tier) two thirds of frames are concealed and
# each new packet moved the face up to 10.5 px in one frame of a 256-px crop, where the tracked face moves
# 3.9 px at most (python scripts/sparse_playout.py). 100 ms halved the pops too, but closed a blink's eyes a
# frame late: 85 % of a clip's blink frames shown closed against 100 %.
CATCH_UP_MS = 67.0

# When what drives the face changes (the voice takes over from packets that stopped, or packets come back),
# the face moves from what was shown to the new source's over this long: six frames shown at 30 a second.
# The voice's head was the still's at rest, swaying, where the packets' is the caller's as last tracked, so
# a switch moved the whole head: up to 15 px from one frame to the next in a receiver's recording. The
# voice's head now starts at the pose shown (audio2exp.driver.SpeechDriver.start_from); the switch still
# carries the code from one source's to the other's, and the head when the camera comes back.
SWITCH_MS = 200.0


class _Glide:
    """What CatchUp and SourceSwitch share: the state shown, moved from the one shown last toward each new
    state over what is left of a stretch once one has begun (`left_ms`, on the clock of `t_ms`); `part`,
    the expression's elements blended, the rest taken whole from the new state."""

    def __init__(self, ms: float):
        self.ms = ms
        self.shown: tuple[Pose, np.ndarray] | None = None   # the state shown last, at shown_ms
        self.shown_ms = 0.0
        self.left_ms = 0.0                                    # of the stretch still to reach the state over

    def _glide(self, state: tuple[Pose, np.ndarray] | None, t_ms: float,
               part: slice) -> tuple[Pose, np.ndarray] | None:
        if self.left_ms > 0:
            before = self.shown
            step = max(0.0, t_ms - self.shown_ms)
            w = min(1.0, step / self.left_ms)
            self.left_ms -= step
            expression = np.array(state[1], dtype=np.float64)
            expression[part] = (1 - w) * before[1][part] + w * expression[part]
            state = interpolate_pose(before[0], state[0], w), expression
        self.shown, self.shown_ms = state, t_ms
        return state


class CatchUp(_Glide):
    """The state shown, moved toward the timeline's over CATCH_UP_MS after concealed frames: a concealed
    face is held or extrapolated where the packet that ends it may put the face elsewhere, and shown at once
    that was a jump, every packet on a sparse link (a pop every 400 ms at the 16 kbps tier), and after each
    lost one. Frames shown from packets throughout pass unchanged. The expression's last two elements are
    taken whole from the timeline's (the mouth cue every decoded packet carries: a cue is never blended)."""

    def __init__(self, ms: float = CATCH_UP_MS):
        super().__init__(ms)
        self.concealed = False

    def __call__(self, state: tuple[Pose, np.ndarray] | None, concealed: bool,
                 t_ms: float) -> tuple[Pose, np.ndarray] | None:
        before = self.shown
        if state is None or before is None or len(before[1]) != len(state[1]):
            self.left_ms = 0.0
        elif self.concealed and not concealed:
            self.left_ms = self.ms
        self.concealed = concealed
        return self._glide(state, t_ms, slice(None, CUE.start))


class SourceSwitch(_Glide):
    """The state shown, moved over SWITCH_MS from what was shown to what the new source says whenever the
    source changes (the voice taking over from packets, or packets coming back), instead of a jump of the
    whole head. The first `k` elements of an expression (the code) are blended; the rest (gaze, lip
    correction, mouth cue: the packets' alone, the voice's state has none) are the new source's."""

    def __init__(self, k: int, ms: float = SWITCH_MS):
        super().__init__(ms)
        self.k = k
        self.source: str | None = None

    def __call__(self, state: tuple[Pose, np.ndarray] | None, source: str,
                 t_ms: float) -> tuple[Pose, np.ndarray] | None:
        """`state` from `source` at `t_ms` (a clock common to every source: the time it is shown)."""
        if state is None:
            return None
        before = self.shown
        if before is None or len(before[1]) < self.k or len(state[1]) < self.k:
            self.left_ms = 0.0
        elif source != self.source:
            self.left_ms = self.ms
        self.source = source
        return self._glide(state, t_ms, slice(None, self.k))


class FeatureTimeline:
    def __init__(self, rest_pose: Pose, code_size: int, hold_ms: float = 500, ease_ms: float = 500,
                 horizon_ms: float = 5000, extrapolate_ms: float = 0, silence_ms: float | None = None):
        """`extrapolate_ms`: how far past the newest packet to continue its motion (0: hold at once).
        `silence_ms`: with no packet at all for this long, ease back to rest as if the face were gone."""
        self.rest = (rest_pose, np.zeros(code_size))
        self.hold_ms, self.ease_ms, self.horizon_ms = hold_ms, ease_ms, horizon_ms
        self.extrapolate_ms, self.silence_ms = extrapolate_ms, silence_ms
        self.times: list[int] = []
        self.items: list[FrameFeatures] = []

    def clear(self) -> None:
        """Forget every packet (the sender's clock stepped: their times mean nothing now)."""
        self.times.clear()
        self.items.clear()

    def add(self, features: FrameFeatures, time_ms: int | None = None) -> None:
        """Insert by capture time (not arrival order); duplicates are ignored."""
        t = features.capture_ms if time_ms is None else time_ms
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            return
        self.times.insert(i, t)
        self.items.insert(i, features)
        # Forget what is far behind the newest packet.
        cut = bisect.bisect_left(self.times, self.times[-1] - self.horizon_ms)
        if cut:
            del self.times[:cut], self.items[:cut]

    def at(self, t_ms: float) -> tuple[Pose, np.ndarray] | None:
        """(pose, expression) for display time t_ms, or None before any packet with a face. The
        expression is the code followed by the gaze, the lip correction and the mouth cue
        (FrameFeatures.expression); `code_size` is its length."""
        i = bisect.bisect_right(self.times, t_ms)
        before = self.items[i - 1] if i else None
        after = self.items[i] if i < len(self.items) else None
        if before is None:
            return (after.pose, after.expression) if after is not None and after.has_face else None
        if before.has_face and after is not None and after.has_face:
            w = (t_ms - self.times[i - 1]) / max(1, self.times[i] - self.times[i - 1])
            return interpolate_pose(before.pose, after.pose, w), _mouth_of(
                (1 - w) * before.expression + w * after.expression, before if w < 0.5 else after)
        last = self._last_face(i - 1)
        if last is None:
            return None
        t_last, face = last
        gap = t_ms - t_last
        if before.has_face and after is None:
            # Past the newest packet: continue its motion briefly, hold, and after a long silence
            # ease back to rest.
            state = self._extrapolate(i - 1, gap) if i >= 2 else (face.pose, face.expression)
            if self.silence_ms is None or gap <= self.silence_ms:
                return state
            return self._toward_rest(state, (gap - self.silence_ms) / self.ease_ms, face)
        if before.has_face or gap <= self.hold_ms:
            return face.pose, face.expression
        # The sender said "no face": held for hold_ms, then eased toward the rest pose.
        return self._toward_rest((face.pose, face.expression), (gap - self.hold_ms) / self.ease_ms, face)

    def _extrapolate(self, i: int, gap: float) -> tuple[Pose, np.ndarray]:
        """Continue the motion from packet i-1 to packet i for up to extrapolate_ms, then hold."""
        prev, last = self.items[i - 1], self.items[i]
        if not prev.has_face or self.extrapolate_ms <= 0:
            return last.pose, last.expression
        span = max(1, self.times[i] - self.times[i - 1])
        w = 1.0 + min(gap, self.extrapolate_ms) / span
        return interpolate_pose(prev.pose, last.pose, w), _mouth_of(
            (1 - w) * prev.expression + w * last.expression, last)

    def _toward_rest(self, state, w: float, face: FrameFeatures) -> tuple[Pose, np.ndarray]:
        """`state` (from packet `face`) eased toward the rest pose and code by w (0..1)."""
        w = float(np.clip(w, 0.0, 1.0))
        rest_pose, rest_code = self.rest
        return interpolate_pose(state[0], rest_pose, w), _mouth_of((1 - w) * state[1] + w * rest_code,
                                                                   face, rest=w >= 1)

    def _last_face(self, i: int):
        while i >= 0:
            if self.items[i].has_face:
                return self.times[i], self.items[i]
            i -= 1
        return None


def _mouth_of(expression: np.ndarray, source: FrameFeatures, rest: bool = False) -> np.ndarray:
    """`expression` (a blend of packets' expressions) with packet `source`'s mouth cue, or none at `rest`: a
    choice of picture or of codebook entry is taken whole (1.5 would name neither). A bare code (no gaze, so
    no cue) is returned as it is."""
    if source.gaze is None or len(expression) != len(source.expression):
        return expression
    expression[CUE] = (0, 0) if rest else (source.mouth, source.interior)
    return expression
