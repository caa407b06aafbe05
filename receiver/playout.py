"""Which pose and code to show at a given time, from the packets received so far.

Between two packets it interpolates; after the last one it holds; when the sender reports no face it
holds a moment, then eases back to the still's own pose and a neutral (zero) code.
"""

from __future__ import annotations

import bisect

import numpy as np

from callsynth.face.pose import Pose, interpolate_pose
from callsynth.wire import FrameFeatures


class FeatureTimeline:
    def __init__(self, rest_pose: Pose, code_size: int, hold_ms: float = 500, ease_ms: float = 500,
                 horizon_ms: float = 5000):
        self.rest = (rest_pose, np.zeros(code_size))
        self.hold_ms, self.ease_ms, self.horizon_ms = hold_ms, ease_ms, horizon_ms
        self.times: list[int] = []
        self.items: list[FrameFeatures] = []

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
        """(pose, code) for display time t_ms, or None before any packet with a face."""
        i = bisect.bisect_right(self.times, t_ms)
        before = self.items[i - 1] if i else None
        after = self.items[i] if i < len(self.items) else None
        if before is None:
            return (after.pose, after.code) if after is not None and after.has_face else None
        if before.has_face and after is not None and after.has_face:
            w = (t_ms - self.times[i - 1]) / max(1, self.times[i] - self.times[i - 1])
            return interpolate_pose(before.pose, after.pose, w), (1 - w) * before.code + w * after.code
        last = self._last_face(i - 1)
        if last is None:
            return None
        t_last, face = last
        # Held since the last face; after hold_ms, ease toward the rest pose.
        gap = t_ms - t_last
        if before.has_face or gap <= self.hold_ms:
            return face.pose, face.code
        w = min(1.0, (gap - self.hold_ms) / self.ease_ms)
        rest_pose, rest_code = self.rest
        return interpolate_pose(face.pose, rest_pose, w), (1 - w) * face.code + w * rest_code

    def _last_face(self, i: int):
        while i >= 0:
            if self.items[i].has_face:
                return self.times[i], self.items[i]
            i -= 1
        return None
