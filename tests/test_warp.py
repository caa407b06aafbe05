import numpy as np

from callsynth.face.code import FaceCoder
from callsynth.face.warp import FaceWarper
from receiver.renderer import WarpRenderer


def test_zero_code_and_own_pose_give_the_still_back(basis, still):
    renderer = WarpRenderer(basis, still)
    out = renderer.render((renderer.rest_pose, np.zeros(basis.k)))
    assert out.shape == still.image.shape
    assert np.abs(out.astype(int) - still.image).max() <= 1


def test_warp_moves_the_face_and_keeps_the_corners(still):
    warper = FaceWarper(still.image, still.landmarks)
    shifted = still.landmarks.copy()
    shifted[:, 0] += 6
    out = warper.warp(shifted)
    face = still.landmarks[:, :2].astype(int)
    x0, y0 = face.min(0)
    x1, y1 = face.max(0)
    region = (slice(y0 + 20, y1 - 20), slice(x0 + 20, x1 - 20))
    moved = np.abs(out[region][:, 6:].astype(int) - still.image[region][:, :-6]).mean()
    unmoved = np.abs(out[region].astype(int) - still.image[region]).mean()
    assert moved < 0.5 * unmoved
    assert np.array_equal(out[:4, :4], still.image[:4, :4])  # the background corner stays put


def test_open_mouth_code_changes_only_the_face(basis, still, val_frames):
    coder = FaceCoder(basis, still.landmarks)
    renderer = WarpRenderer(basis, still)
    code = np.zeros(basis.k)
    code[0] = basis.code_hi[0] * 0.6
    out = renderer.render((coder.still_pose, code))
    diff = np.abs(out.astype(int) - still.image).sum(2)
    assert diff.max() > 30
    for corner in (diff[:3, :3], diff[:3, -3:], diff[-3:, :3], diff[-3:, -3:]):
        assert corner.max() < 10  # the crop border (background) stays put
