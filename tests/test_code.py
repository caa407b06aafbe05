import numpy as np

from callsynth.face.code import FaceCoder
from callsynth.face.crop import StableCrop, box_for_face
from callsynth.face.tracker import FaceTracker, inter_ocular


def test_still_with_zero_code_gives_the_still_landmarks(basis, still):
    coder = FaceCoder(basis, still.landmarks)
    back = coder.landmarks(coder.still_pose, np.zeros(basis.k))
    assert np.allclose(back, still.landmarks, atol=1e-9)


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
    """Frame 30 has the mouth wide open: pose alone (zero code) misses it, pose + code does not."""
    coder = FaceCoder(basis, still.landmarks)
    with FaceTracker(video=False, smoothing=False) as tracker:
        res = tracker.process(val_frames[30])
    lm = box_for_face(res.landmarks).to_crop(res.landmarks)
    pose, code = coder.encode(lm)
    with_code = np.linalg.norm(coder.landmarks(pose, code)[:, :2] - lm[:, :2], axis=1).mean()
    without = np.linalg.norm(coder.landmarks(pose, 0 * code)[:, :2] - lm[:, :2], axis=1).mean()
    assert with_code < 0.5 * without
