import numpy as np

from callsynth.face.pose import Pose
from callsynth.wire import FLAG_NO_FACE, FrameFeatures
from receiver.playout import FeatureTimeline

REST = Pose(np.zeros(3), np.array([0.5, 0.5, 0.0]), 0.2)


def face(t, x, value):
    return FrameFeatures(t, Pose(np.zeros(3), np.array([x, 0.5, 0.0]), 0.2), np.full(4, value))


def test_interpolates_between_packets_in_capture_order():
    tl = FeatureTimeline(REST, 4)
    tl.add(face(100, 0.6, 1.0))   # arrives late: order of arrival must not matter
    tl.add(face(0, 0.4, 0.0))
    assert tl.at(-5) is not None  # before the first packet: show the first
    pose, code = tl.at(50)
    assert np.isclose(pose.translation[0], 0.5) and np.allclose(code, 0.5)


def test_holds_then_eases_back_to_rest_after_no_face():
    tl = FeatureTimeline(REST, 4, hold_ms=200, ease_ms=200)
    tl.add(face(0, 0.7, 2.0))
    tl.add(FrameFeatures(100, flags=FLAG_NO_FACE))
    assert np.allclose(tl.at(150)[1], 2.0)          # held
    assert np.allclose(tl.at(300)[1], 1.0)          # half way
    pose, code = tl.at(1000)
    assert np.allclose(code, 0) and np.isclose(pose.translation[0], 0.5)  # back at rest


def test_nothing_before_any_face():
    tl = FeatureTimeline(REST, 4)
    assert tl.at(0) is None
    tl.add(FrameFeatures(0, flags=FLAG_NO_FACE))
    assert tl.at(10) is None
