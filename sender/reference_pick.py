"""Choosing reference stills as they happen: a picture with the mouth wide open, one with the mouth a little
open showing the teeth this caller usually shows there (the median of the recent frames: a rare grin would
put too many teeth in every slightly open mouth), and one with the eyes closed, each what the first still
lacks (callsynth/face/reference_blend.py draws from them).

Every frame the tracker's landmarks say how open the lips and the eyes are; the best candidate of each
kind is held while the moment lasts and sent once it has passed (`settle_frames` without a better one),
so only frames already seen are ever sent. A kind is sent again only when a clearly better candidate
comes, or when the one the receiver holds stops matching: the light on the face has changed, or the head
now sits at another angle. Only the face travels (the rest of the crop is flat, the receiver blends
only eyes and mouth from a reference), about 12 KB a picture, and all references of a call together
stay inside REFERENCE_BUDGET bytes (one that would not fit is not sent).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from callsynth.face.regions import eye_openness, lip_gap, polygon_mask, teeth_share
from callsynth.face.still import Still
from callsynth.face.warp import FACE_OVAL

REFERENCE_BUDGET = 60_000              # bytes of reference stills in one call, all sent ones together

KINDS = {"mouth": 1, "eyes": 2, "smile": 3}   # reference index on the wire for each kind
MOUTH_MIN_GAP = 0.15                   # lip gap over iris distance for a wide-open mouth worth sending
SMILE_GAPS = (0.08, 0.22)              # a mouth a little open, as in most of talking and in smiles
SMILE_MIN_TEETH = 0.15
SMILE_TYPICAL = 50                     # percentile of the caller's teeth share at SMILE_GAPS: the smile's aim
EYES_MAX_SHARE = 0.45                  # eye openness under this share of the recent median: closed
MAX_TURN = 0.35                        # radians away from the still's pose: too turned to use
BETTER = 1.25                          # a candidate must beat the live one by this factor
LIGHT_CHANGE = 0.15                    # relative change of the face's brightness that makes a reference stale
TURN_CHANGE = 0.30                     # radians the head has settled away from where a reference was taken


@dataclass
class Candidate:
    kind: str
    score: float
    image: np.ndarray
    landmarks: np.ndarray
    capture_ms: int
    light: float
    turn: float


def _face_light(image: np.ndarray, landmarks: np.ndarray) -> float:
    lo, hi = landmarks[:, :2].min(0).astype(int), landmarks[:, :2].max(0).astype(int)
    lo, hi = np.clip(lo, 0, image.shape[1] - 1), np.clip(hi, 1, image.shape[0])
    patch = image[lo[1]:hi[1], lo[0]:hi[0]]
    return float(patch.mean()) if patch.size else 0.0


def face_only(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The picture with everything outside the face outline (grown a little) flattened to its mean
    colour: a reference lends only eyes and mouth, and a flat background costs the JPEG nothing."""
    keep = polygon_mask(image.shape, landmarks[FACE_OVAL], grow=8.0, feather=3.0)[..., None]
    flat = image.reshape(-1, 3).mean(0)
    return (image * keep + flat * (1 - keep) + 0.5).astype(np.uint8)


@dataclass
class PendingReference:
    """A reference chosen but not yet made: finish() re-tracks, cuts and encodes it (None: over budget)."""

    picker: "ReferencePicker"
    kind: str
    chosen: "Candidate"

    def finish(self):
        return self.picker.finish(self.kind, self.chosen)


class ReferencePicker:
    def __init__(self, still: Still, encode=None, settle_frames: int = 6, min_interval_ms: int = 3000,
                 budget: int = REFERENCE_BUDGET, defer: bool = False, gap_ms: int = 0, on_sent=None):
        """`encode(index, still) -> bytes`: the message a reference travels as (its size counts against
        `budget`); without it, observe returns the Stills themselves and counts nothing. `defer`: observe
        returns PendingReference objects whose finish() does the costly part (a live call runs it off the
        tracking path: re-tracking in image mode took a frame's packet 20-30 ms longer). `gap_ms`: at
        least this long between any two references (a live call spreads their cost; a kind ready meanwhile
        waits). `on_sent(index, still)`: told of each reference that goes out (within the budget), from
        the thread that finishes it."""
        self.gap_ms, self.last_ms, self.on_sent = gap_ms, -(1 << 62), on_sent
        self.encode, self.budget, self.spent, self.defer = encode, budget, 0, defer
        self.settle_frames, self.min_interval_ms = settle_frames, min_interval_ms
        self.openness = deque([float(eye_openness(still.landmarks).mean())], maxlen=150)
        self.talk_teeth: deque[float] = deque(maxlen=300)   # teeth share of recent frames at SMILE_GAPS
        self.teeth_goal = SMILE_MIN_TEETH                     # what a smile picture aims at (from talk_teeth)
        self.pending: dict[str, Candidate | None] = {k: None for k in KINDS}
        self.waited = {k: 0 for k in KINDS}
        self.live: dict[str, Candidate] = {}
        self.sent_ms: dict[str, int] = {}
        self.light = None            # running brightness of the face
        self.turn = 0.0              # running head turn from the still's pose
        self._tracker = None

    def observe(self, crop: np.ndarray, landmarks: np.ndarray, capture_ms: int, turn: float
                ) -> list:
        """One tracked frame (its crop, crop-pixel landmarks, head turn from the still's pose in radians);
        returns the references to send now: messages from `encode`, or (index, Still) without it."""
        opened = float(eye_openness(landmarks).mean())
        median = float(np.median(self.openness))
        if opened > EYES_MAX_SHARE * median:
            self.openness.append(opened)
        light = _face_light(crop, landmarks)
        self.light = light if self.light is None else 0.9 * self.light + 0.1 * light
        self.turn = 0.9 * self.turn + 0.1 * turn
        if turn < MAX_TURN:
            gap = lip_gap(landmarks)
            if gap >= SMILE_GAPS[0]:
                teeth = teeth_share(crop, landmarks)
                if gap >= MOUTH_MIN_GAP:
                    self._offer(Candidate("mouth", gap * (0.4 + teeth), crop, landmarks, capture_ms, light,
                                          turn))
                if gap <= SMILE_GAPS[1]:
                    self.talk_teeth.append(teeth)
                    self.teeth_goal = max(float(np.percentile(self.talk_teeth, SMILE_TYPICAL)), SMILE_MIN_TEETH)
                    if teeth >= SMILE_MIN_TEETH:
                        self._offer(Candidate("smile", teeth, crop, landmarks, capture_ms, light, turn))
            if opened < EYES_MAX_SHARE * median:
                self._offer(Candidate("eyes", 1 - opened / median, crop, landmarks, capture_ms, light, turn))
        out = []
        for kind in KINDS:
            if self.pending[kind] is None:
                continue
            self.waited[kind] += 1
            if self.waited[kind] >= self.settle_frames and capture_ms - self.last_ms >= self.gap_ms:
                chosen, self.pending[kind] = self.pending[kind], None
                if not self._wanted(chosen, capture_ms):
                    continue
                self.live[kind] = chosen
                self.sent_ms[kind] = self.last_ms = capture_ms
                if self.defer:
                    out.append(PendingReference(self, kind, chosen))
                else:
                    item = self.finish(kind, chosen)
                    if item is not None:
                        out.append(item)
        return out

    def finish(self, kind: str, chosen: Candidate):
        """The chosen moment as what travels (re-tracked, face only, encoded): None when it would
        overrun the budget."""
        still = self._still(chosen)
        if self.encode is None:
            item = KINDS[kind], still
        else:
            item = self.encode(KINDS[kind], still)
            if self.spent + len(item) > self.budget:
                return None
            self.spent += len(item)
        if self.on_sent is not None:
            self.on_sent(KINDS[kind], still)
        return item

    def warm_up(self, image: np.ndarray) -> None:
        """The image-mode tracker's start-up, paid before the call rather than at its first reference."""
        self._image_tracker().process(image)

    def stale(self, kind: str) -> bool:
        """The live reference of `kind` no longer matches what the camera shows."""
        ref = self.live.get(kind)
        if ref is None or self.light is None:
            return False
        return (abs(self.light - ref.light) > LIGHT_CHANGE * max(ref.light, 1.0)
                or abs(self.turn - ref.turn) > TURN_CHANGE)

    def _merit(self, candidate: Candidate) -> float:
        """How good a candidate is now: a smile picture's teeth near what the caller usually shows."""
        if candidate.kind != "smile":
            return candidate.score
        # 0.02: nearer than that hardly matters (nor divides by 0)
        return 1.0 / (0.02 + abs(candidate.score - self.teeth_goal))

    def _offer(self, candidate: Candidate) -> None:
        held = self.pending[candidate.kind]
        if held is None or self._merit(candidate) > self._merit(held):
            candidate.image = candidate.image.copy()
            candidate.landmarks = np.array(candidate.landmarks, dtype=np.float64)
            self.pending[candidate.kind] = candidate
            self.waited[candidate.kind] = 0

    def _wanted(self, candidate: Candidate, now_ms: int) -> bool:
        live = self.live.get(candidate.kind)
        if live is None:
            return True
        if now_ms - self.sent_ms[candidate.kind] < self.min_interval_ms:
            return False
        return self._merit(candidate) > BETTER * self._merit(live) or self.stale(candidate.kind)

    def _still(self, candidate: Candidate) -> Still:
        """The candidate as a Still, its landmarks re-tracked on the crop in image mode (the video
        tracker's smoothing lags behind a blink)."""
        again = self._image_tracker().process(candidate.image)
        landmarks = again.landmarks.astype(np.float64) if again.found else candidate.landmarks
        return Still(face_only(candidate.image, landmarks), landmarks)

    def _image_tracker(self):
        from callsynth.face.tracker import FaceTracker

        if self._tracker is None:
            self._tracker = FaceTracker(video=False, smoothing=False)
        return self._tracker

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
