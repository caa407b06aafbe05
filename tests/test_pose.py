import numpy as np
from scipy.spatial.transform import Rotation

from callsynth.face.pose import Pose, estimate_pose, interpolate_pose, umeyama


def test_pose_round_trip_on_synthetic_rotations(basis):
    rng = np.random.default_rng(1)
    for _ in range(25):
        rotvec = rng.uniform(-0.6, 0.6, 3)
        truth = Pose(rotvec, np.r_[rng.uniform(0.3, 0.7, 2), rng.uniform(-0.1, 0.1)], rng.uniform(0.1, 0.3))
        landmarks = truth.apply(basis.mean_shape)
        got = estimate_pose(landmarks, basis.mean_shape, basis.rigid_idx)
        assert np.allclose(got.rotvec, rotvec, atol=1e-9)
        assert np.allclose(got.translation, truth.translation, atol=1e-9)
        assert np.isclose(got.scale, truth.scale)
        assert np.allclose(got.to_canonical(landmarks), basis.mean_shape, atol=1e-9)


def test_pose_ignores_expression_on_non_rigid_points(basis):
    truth = Pose(np.array([0.1, -0.2, 0.05]), np.array([0.5, 0.45, 0.0]), 0.2)
    shape = basis.mean_shape.copy()
    moving = np.setdiff1d(np.arange(478), basis.rigid_idx)
    shape[moving] += np.random.default_rng(2).normal(0, 0.05, (len(moving), 3))
    got = estimate_pose(truth.apply(shape), basis.mean_shape, basis.rigid_idx)
    assert np.allclose(got.rotvec, truth.rotvec, atol=1e-9)


def test_umeyama_never_returns_a_reflection():
    pts = np.random.default_rng(3).normal(size=(50, 3))
    mirrored = pts * np.array([-1, 1, 1])
    _, rot, _ = umeyama(pts, mirrored)
    assert np.isclose(np.linalg.det(rot), 1.0)


def test_interpolation_hits_both_ends_and_the_middle():
    a = Pose(np.zeros(3), np.zeros(3), 1.0)
    b = Pose(np.array([0, 0.4, 0]), np.array([1.0, 0, 0]), 4.0)
    assert np.allclose(interpolate_pose(a, b, 0).rotvec, a.rotvec)
    assert np.allclose(interpolate_pose(a, b, 1).rotvec, b.rotvec)
    mid = interpolate_pose(a, b, 0.5)
    assert np.allclose(Rotation.from_rotvec(mid.rotvec).as_rotvec(), [0, 0.2, 0])
    assert np.isclose(mid.scale, 2.0) and np.allclose(mid.translation, [0.5, 0, 0])
