import numpy as np

from callsynth.face.code import FaceCoder
from callsynth.face.crop import StableCrop, box_for_face
from callsynth.face.tracker import FaceTracker, inter_ocular


def test_still_with_zero_code_gives_the_still_landmarks(basis, still):
    coder = FaceCoder(basis, still.landmarks)
    back = coder.landmarks(coder.still_pose, np.zeros(basis.k))
    assert np.allclose(back, still.landmarks, atol=1e-9)


def test_each_iris_keeps_the_stills_own_offset_and_moves_by_the_gaze_sent(basis, still):
    """A zero gaze change leaves both irises where the still has them (each eye its own offset: both moved to
    their mean turned the still's own eyes by up to a pixel), and a change moves both by it."""
    from callsynth.face.regions import eye_gazes, gaze

    coder = FaceCoder(basis, still.landmarks)
    k = basis.k
    own = eye_gazes(still.landmarks)
    assert abs(own[0, 0] - own[1, 0]) > 0.005                 # this still's eyes do differ
    same = coder.landmarks(coder.still_pose, np.zeros(k + 2))
    assert np.allclose(same, still.landmarks, atol=1e-9)
    moved = coder.landmarks(coder.still_pose, np.r_[np.zeros(k), 0.05, -0.02])
    assert np.allclose(eye_gazes(moved), own + [0.05, -0.02], atol=1e-9)
    assert np.allclose(gaze(moved), gaze(still.landmarks) + [0.05, -0.02], atol=1e-9)
    drawn = coder.landmarks(coder.still_pose, np.r_[np.zeros(k), 0.05, -0.02], gaze_gain=2.0)
    assert np.allclose(eye_gazes(drawn), own + [0.1, -0.04], atol=1e-9)
    assert np.array_equal(drawn[:468], moved[:468])               # the gain moves the irises alone


def test_code_reconstructs_unseen_faces_landmarks(basis, still, val_frames):
    """Pose + K-coefficient code of a validation person rebuilds the tracked landmarks closely."""
    coder = FaceCoder(basis, still.landmarks)
    crop = StableCrop()
    errors = []
    with FaceTracker(video=True, smoothing=False) as tracker:
        for frame in val_frames:
            res = tracker.process(frame)
            lm = crop.update(res.landmarks, frame.shape).to_crop(res.landmarks)
            pose, code = coder.encode(lm)
            rebuilt = coder.landmarks(pose, code)
            errors.append(np.linalg.norm(rebuilt[:, :2] - lm[:, :2], axis=1).mean() / inter_ocular(lm))
    assert 100 * np.mean(errors) < 2.0   # % of inter-ocular distance


def test_code_carries_the_expression(basis, still, val_frames):
    """Frame 30's expression (its mouth closed, its lips pressed: lip gap 0.003 against the still's 0.054):
    pose alone (zero code) misses it, pose + code does not."""
    coder = FaceCoder(basis, still.landmarks)
    with FaceTracker(video=False, smoothing=False) as tracker:
        res = tracker.process(val_frames[30])
    lm = box_for_face(res.landmarks).to_crop(res.landmarks)
    pose, code = coder.encode(lm)
    with_code = np.linalg.norm(coder.landmarks(pose, code)[:, :2] - lm[:, :2], axis=1).mean()
    without = np.linalg.norm(coder.landmarks(pose, 0 * code)[:, :2] - lm[:, :2], axis=1).mean()
    assert with_code < 0.5 * without


def test_the_lip_correction_gives_the_lips_the_opening_the_code_misses(basis, still, val_frames):
    """The code parts some callers' lips too little or too far (scripts/lip_gap_bias.py); the correction that
    travels beside it makes the pose-free lip gap the tracked one, and leaves every other point alone."""
    from callsynth.face.crop import CROP_SIZE
    from callsynth.face.regions import LIP_CENTRE, LOWER_LIP, UPPER_LIP

    coder = FaceCoder(basis, still.landmarks)
    with FaceTracker(video=False, smoothing=False) as tracker:
        res = tracker.process(val_frames[15])                 # the mouth wide open (lip gap 0.21)
    lm = box_for_face(res.landmarks).to_crop(res.landmarks)
    pose, expression = coder.expression(lm)
    k = basis.k
    assert expression.shape == (coder.expression_size,) == (k + 5,)

    def opening(landmarks):       # pose-free distance between the inner lips' middles (the irises, which
        c = pose.to_canonical(landmarks / CROP_SIZE)          # the gaze moves, left out)
        return float(np.linalg.norm(c[LIP_CENTRE[0]] - c[LIP_CENTRE[1]]))

    real = opening(lm)
    plain = coder.landmarks(pose, expression[:k + 2])
    corrected = coder.landmarks(pose, expression)
    assert abs(opening(plain) - real) > 0.05 * real          # the code alone misses this face's opening
    assert abs(opening(corrected) - real) < 0.25 * abs(opening(plain) - real)
    moved = np.flatnonzero(np.abs(corrected - plain).max(1) > 1e-9)
    assert set(moved) <= set(UPPER_LIP) | set(LOWER_LIP)
    # closing further than closed stops at closed; a zero correction changes nothing
    shut = coder.landmarks(pose, np.r_[expression[:k + 2], -5.0])
    assert opening(shut) < 0.3 * real          # the rest of it is depth: the lips meet, not cross
    assert np.allclose(coder.landmarks(pose, np.r_[expression[:k + 2], 0.0]), plain)
