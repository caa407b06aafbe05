import socket

import numpy as np
import pytest

from callsynth.face.tracker import NUM_LANDMARKS, FaceTracker, inter_ocular

from .conftest import VAL_CLIP


def test_tracker_runs_offline_on_a_real_frame(val_frames, monkeypatch):
    """The face-mesh model must come from the installed wheel: any network use fails this test."""
    def no_network(*args, **kwargs):
        raise AssertionError("the tracker tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with FaceTracker(video=False, smoothing=False) as tracker:
        result = tracker.process(val_frames[0])
    assert result.found
    assert result.landmarks.shape == (NUM_LANDMARKS, 3)
    h, w = val_frames[0].shape[:2]
    assert 0 < result.landmarks[:, 0].min() < result.landmarks[:, 0].max() < w
    assert inter_ocular(result.landmarks) > 20  # a face, not a speck


@pytest.mark.parametrize("frame", [
    np.zeros((240, 320, 3), np.uint8),                 # black
    np.full((64, 64), 200, np.uint8),                  # grayscale
    np.random.default_rng(0).random((120, 160, 3)),    # float noise
    np.zeros((100, 100, 4), np.uint8),                 # RGBA
    np.zeros((1, 1, 3), np.uint8),                     # tiny
    np.zeros((5, 5, 5), np.uint8),                     # not an image
])
def test_no_face_is_an_explicit_result_not_an_exception(frame):
    with FaceTracker() as tracker:
        result = tracker.process(frame)
    assert not result.found and result.reason


def test_several_faces_give_the_largest(val_frames):
    big = val_frames[0]
    small = big[::2, ::2]
    canvas = np.zeros((big.shape[0], big.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[: small.shape[0], big.shape[1]:] = small
    with FaceTracker(video=False, smoothing=False) as tracker:
        result = tracker.process(canvas)
    assert result.found
    assert result.landmarks[:, 0].mean() < big.shape[1]  # the big face, on the left


def test_video_mode_smoothing_follows_the_face(val_frames):
    with FaceTracker(video=True, smoothing=True) as smooth, \
            FaceTracker(video=True, smoothing=False) as raw:
        gaps = []
        for frame in val_frames[:20]:
            a, b = smooth.process(frame), raw.process(frame)
            assert a.found and b.found
            gaps.append(np.abs(a.landmarks[:, :2] - b.landmarks[:, :2]).mean())
    assert gaps[0] == 0          # the first frame passes through
    assert max(gaps) < 3.0       # light smoothing: never far from the raw track (pixels)


def test_video_mode_smoothing_keeps_a_speaking_mouth(val_frames):
    """The lips move at a syllable rate: the smoothed track's lip gap follows the raw one's (at a 3 Hz
    cutoff it lagged and fell short: r 0.86, spread 0.73 of the raw's on this clip; 0.95 and 0.85 at 8 with
    the face's speed coefficient; 0.98 and 0.92 with the lips' own, LIP_BETA)."""
    from callsynth.face.regions import lip_gap

    with FaceTracker(video=True, smoothing=True) as smooth, \
            FaceTracker(video=True, smoothing=False) as raw:
        gaps = np.array([(lip_gap(smooth.process(f).landmarks), lip_gap(raw.process(f).landmarks))
                         for f in val_frames])
    assert np.corrcoef(gaps[:, 0], gaps[:, 1])[0, 1] > 0.97
    assert gaps[:, 0].std() > 0.9 * gaps[:, 1].std()


def test_landmarks_read_from_bytes_equal_mediapipes_own_points(val_frames):
    """The fast reader (the serialised protobuf) gives exactly the points' attributes, and a list whose
    points carry more than x, y, z is read the slow way, not misread."""
    import mediapipe as mp

    from callsynth.face.tracker import landmark_array

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        face = mesh.process(np.ascontiguousarray(val_frames[0])).multi_face_landmarks[0]
    slow = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
    assert landmark_array(face).shape == (NUM_LANDMARKS, 3)
    assert np.array_equal(landmark_array(face), slow)
    face.landmark[5].visibility = 0.5                    # one point with a fourth field
    assert np.array_equal(landmark_array(face), slow)
    face.landmark[5].ClearField("z")                     # and one with a field missing
    slow[5, 2] = 0.0
    assert np.array_equal(landmark_array(face), slow)


def test_the_tracker_prints_no_start_up_chatter(data):
    """MediaPipe's C++ side printed 'Feedback manager requires a model ...' twice (and XNNPACK's line) from its
    own threads just after a tracker was made, through the middle of a command's progress bar. In a process
    of its own, since the lines go straight to fd 2: a tracker of each mode, made and used, prints nothing."""
    import subprocess
    import sys

    probe = ("import time, av\n"
             "from callsynth.face.tracker import FaceTracker\n"
             f"with av.open({str(data / VAL_CLIP)!r}) as c:\n"
             "    frame = next(c.decode(video=0)).to_ndarray(format='rgb24')\n"
             "for video in (True, False):\n"
             "    with FaceTracker(video=video) as tracker:\n"
             "        time.sleep(0.3)\n"
             "        assert tracker.process(frame).found\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
