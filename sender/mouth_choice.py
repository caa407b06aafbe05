"""Which picture the receiver should draw an open mouth's interior from: the sender sees the real mouth.

The receiver holds the still and a few reference stills (sender/reference_pick.py) and draws an open
mouth's interior from one of them (callsynth/face/reference_blend.py). On its own it can only guess from
the code: the picture whose lip gap is nearest, visible teeth counting in its favour; it guessed wrong on
people who show their teeth one moment and a dark mouth or the tongue the next (README, "Eyes, teeth and
edges"). The sender has the real frame, so it names the picture whose interior looks most like the
camera's: three bits a packet (wire.FrameFeatures.mouth).

Each picture's interior and the camera's are sampled on a grid stretched between the inner lips
(regions.interior_grid), as the warp stretches a picture's interior onto the target's lips, and compared
point by point (mean absolute difference): 0.19 ms a choice (median, on a validation clip). Drawing each
picture as the receiver does and comparing the pixels chose about as well (interior error on four clips
within 1.5 of this) at 25x the cost, 4.8 ms a choice (both /tmp probes, 2-core Intel Xeon at 2.1 GHz).
Only on a sent frame whose mouth the receiver draws open, and only among two or more pictures: otherwise 0,
and the receiver's own rule gives the same. In a call a picture counts from the receiver's receipt for it
(FeatureEncoder.reference_arrived): a reference takes a second or so to cross a tight link, and named
before it had arrived, a picture replacing another of its index was drawn as the one before. (`reenact`
and `eval` deliver a reference on the frame it is sent, so there it counts from then.)

Then the interior code (face/interior_code.py): the sender draws the open mouth as its receiver will, from
the named picture (ReferenceBlender.drawn_mouth on a mirror of the receiver's pictures), and names the
codebook entry nearest the real interior's difference from that drawing: one byte a packet.
"""

from __future__ import annotations

import numpy as np

from callsynth.face import reference_blend
from callsynth.face.crop import CROP_SIZE
from callsynth.face.interior_code import interior_index, shipped_codebook
from callsynth.face.reference_blend import ReferenceBlender, lends_mouth, mouth_weight
from callsynth.face.regions import interior_grid, lip_gap
from callsynth.face.still import Still
from callsynth.face.warp import FaceWarper
from callsynth.wire import MAX_MOUTH


class MouthChoice:
    """The pictures the receiver may draw an open mouth from (the still, and each reference sent, whose
    mouth is open: reference_blend.lends_mouth, as in ReferenceBlender.mouth_sources), as interior grids
    by identity index."""

    def __init__(self, still: Still):
        self.grids: dict[int, np.ndarray] = {}
        self.codebook = shipped_codebook()
        self.add(0, still)

    def add(self, index: int, still: Still) -> None:
        """A picture the receiver holds from now (the still, index 0, or a reference sent), replacing the
        one of that index. Safe from another thread: the dict is copied, not changed, and the blender
        replaced or copied on write (ReferenceBlender.add)."""
        if index == 0:
            self.warper, self.blender = FaceWarper(still.image, still.landmarks), ReferenceBlender(still)
        else:
            self.blender.add(index, still)
        grids = {i: g for i, g in self.grids.items() if i != index}
        if lends_mouth(lip_gap(still.landmarks)) and 0 <= index < MAX_MOUTH:
            grids[index] = interior_grid(still.image, still.landmarks)
        self.grids = grids

    @property
    def choosing(self) -> bool:
        """Whether there is a choice to make (two pictures or more)."""
        return len(self.grids) >= 2

    def choose(self, real: np.ndarray, landmarks: np.ndarray, target: np.ndarray) -> int:
        """The mouth source for a frame whose camera crop is `real` with the tracked `landmarks`, and whose
        packet makes the landmarks `target` (crop pixels): identity index + 1 of the picture whose interior
        is nearest the camera's; 0 where the receiver draws no interior or has one picture or none."""
        grids = self.grids
        if len(grids) < 2 or mouth_weight(target) <= 0:
            return 0
        seen = interior_grid(real, landmarks)
        index = min(grids, key=lambda i: float(np.abs(grids[i] - seen).mean()))
        return index + 1

    def warm_up(self) -> None:
        """The warp's and the mouth drawing's one-off start-up (their compiled kernels load in about 0.4 and
        0.2 s), paid before the call: otherwise the first open mouth's packet would wait for them."""
        self.warper.warp(self.blender.still.landmarks, (0, 0, 8, 8))
        reference_blend.warm_up()

    def interior(self, views: list[tuple[np.ndarray, np.ndarray]], mouth: int) -> int:
        """The interior code of a packet with mouth source `mouth` for the frames the receiver draws with its
        cue, `views`: each (camera crop, the landmarks the receiver draws it at), the packet's own first,
        fitted on those the receiver draws open: a frame between packets may open where the packet's own
        frame is drawn closed (a mouth opening), and drawn without a code its interior was the furthest from
        the camera's of any frame (a /tmp probe). 0 where every one is drawn closed (or there is no codebook
        to name from)."""
        if self.codebook is None:
            return 0
        drawn = [(real, self.blender.drawn_mouth(self.warper, target, CROP_SIZE, mouth), target)
                 for real, target in views]
        return interior_index(self.codebook, [view for view in drawn if view[1] is not None])
