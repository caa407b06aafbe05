import numpy as np

from callsynth.face.crop import CROP_SIZE, StableCrop, box_for_face


def _face(cx, cy, size=100.0):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (478, 3)) * size
    pts[:2, :2] = [[-size / 2, -size / 2], [size / 2, size / 2]]
    return pts + [cx, cy, 0]


def test_crop_is_fixed_under_small_motion_and_moves_when_the_head_leaves():
    crop = StableCrop()
    first = crop.update(_face(320, 240), (480, 640))
    for dx in range(0, 30, 3):
        assert crop.update(_face(320 + dx, 240), (480, 640)) == first
    moved = crop.update(_face(420, 240), (480, 640))
    assert moved != first and crop.moves == 1
    assert crop.update(None, (480, 640)) == moved  # no face: the box stays


def test_crop_follows_a_large_change_of_size():
    crop = StableCrop()
    first = crop.update(_face(320, 240, 100), (480, 640))
    assert crop.update(_face(320, 240, 150), (480, 640)) != first


def test_crop_maps_landmarks_and_pixels_consistently():
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[140:160, 190:210] = 255  # a white square at (200, 150)
    box = box_for_face(_face(200, 150, 80))
    out = box.cut(frame)
    assert out.shape == (CROP_SIZE, CROP_SIZE, 3)
    x, y = box.to_crop(np.array([[200.0, 150.0, 0.0]]))[0, :2]
    assert out[int(round(y)), int(round(x))].min() > 200
