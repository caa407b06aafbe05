import numpy as np

from callsynth.face.code import FaceCoder
from callsynth.face.regions import polygon_mask
from callsynth.face.warp import FACE_OVAL, FaceWarper
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


def test_no_folded_triangle_on_any_frame_of_the_validation_clips(basis, data):
    """Every frame of every validation clip, through the call's path (code, wire quantisation, target
    landmarks): the mesh the warper draws has no triangle folded over, while the raw targets do fold
    (on turns and stretched expressions), so the repair is what keeps it clean."""
    from callsynth.face.landmark_cache import track_file
    from callsynth.face.warp import folded
    from callsynth.split import validation_files
    from callsynth.wire import Codec, FrameFeatures

    codec = Codec(basis)
    frames = raw_folds = left = 0
    for name in sorted(validation_files()):
        tracked = track_file(data / name)["landmarks"].astype(np.float64)
        tracked = tracked[~np.isnan(tracked[:, 0, 0])]
        coder = FaceCoder(basis, tracked[0])
        warper = FaceWarper(np.zeros((256, 256, 3), np.uint8), tracked[0])
        for i, landmarks in enumerate(tracked):
            pose, code = coder.encode(landmarks)
            sent = codec.roundtrip(FrameFeatures(i * 40, pose, code))
            target = coder.landmarks(sent.pose, sent.code)
            raw_folds += int(folded(warper.src_points, warper.target_points(target), warper.triangles).sum())
            left += warper.folded_count(target)
            frames += 1
    assert frames > 1000
    assert raw_folds > 0
    assert left == 0


def test_crop_past_the_frame_edge_draws_no_bars(val_frames):
    """A crop that runs past the frame's edge continues it as a soft colour field: repeating the edge
    row drew tall bars (every column constant, sharp steps between columns)."""
    import cv2

    from callsynth.face.crop import CropBox

    frame = val_frames[0]
    h, w = frame.shape[:2]
    box = CropBox(w / 2, 10.0, float(min(w, h)) * 0.6)      # its top third lies above the frame
    crop = box.cut(frame).astype(int)
    bars = cv2.warpAffine(frame, box.matrix(), (256, 256), borderMode=cv2.BORDER_REPLICATE).astype(int)
    outside = slice(0, 40)
    step = lambda img: np.abs(np.diff(img[outside], axis=1)).mean()  # noqa: E731
    assert step(crop) < 0.35 * step(bars)
    assert np.abs(crop[160:] - bars[160:]).max() <= 1        # inside the frame nothing changes


def _kinks(map_x: np.ndarray, band: np.ndarray) -> float:
    """How sharply the backward map bends inside `band`: the 99th percentile of its Laplacian there
    (a piecewise-affine map is flat inside each triangle and kinks along the edges between them)."""
    import cv2

    return float(np.percentile(np.abs(cv2.Laplacian(map_x, cv2.CV_32F))[band], 99))


def test_a_turned_head_bends_the_cheek_edge_smoothly(basis, still, monkeypatch):
    """A head turned 0.35 rad from the still: along the face outline the warp's map must bend smoothly.
    Each thin triangle there used to shear the still's hair edge its own way: a sawtooth along the cheek
    and jaw (issue 11). With the outline's smoothing switched off the kinks are what they were."""
    import cv2

    from callsynth.face import warp
    from callsynth.face.pose import Pose
    from callsynth.face.warp import FACE_OVAL, outline_bend

    coder = FaceCoder(basis, still.landmarks)
    rest = coder.still_pose
    turned = Pose(rest.rotvec + np.array([0.0, 0.35, 0.0]), rest.translation, rest.scale)
    target = coder.landmarks(turned, np.zeros(basis.k))
    outline = target[FACE_OVAL, :2]
    assert outline_bend(still.landmarks[FACE_OVAL, :2], outline) > warp.BEND_FULL   # smoothed in full
    band = np.zeros(still.image.shape[:2], np.uint8)
    cv2.polylines(band, [np.round(outline).astype(np.int32)], True, 1, 7)
    warper = FaceWarper(still.image, still.landmarks)
    smooth = _kinks(warper.maps(target)[0], band > 0)
    monkeypatch.setattr(warp, "BEND_FROM", 10.0)           # never smooth
    monkeypatch.setattr(warp, "BEND_FULL", 11.0)
    raw = _kinks(warper.maps(target)[0], band > 0)
    assert smooth < 0.2 * raw, (smooth, raw)


def test_a_still_facing_as_it_did_is_not_smoothed(basis, still):
    """Without a turn (the zero code at the still's pose) the warp gives the still back, outline and all."""
    from callsynth.face.warp import FACE_OVAL, outline_bend

    assert outline_bend(still.landmarks[FACE_OVAL, :2], still.landmarks[FACE_OVAL, :2]) < 1e-6


def test_a_change_to_the_warp_carried_back_is_the_change_to_the_still(basis, still):
    """splat_back is the warp's inverse where it is one to one: a smooth change drawn on the still, warped
    with the face to an expression, comes back onto the still's own pixels as it was drawn."""
    from callsynth.face.warp import FaceWarper, remap, splat_back

    warper = FaceWarper(still.image, still.landmarks)
    code = np.zeros(basis.k)
    code[0] = 1.0
    maps = warper.maps(FaceCoder(basis, still.landmarks).landmarks(FaceCoder(basis, still.landmarks).still_pose, code))
    size = still.image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    change = np.stack([np.sin(xx / 17), np.cos(yy / 23), np.sin((xx + yy) / 29)], -1) * 20
    back = splat_back(remap(change, maps), maps, (size, size))
    face = polygon_mask((size, size), still.landmarks[FACE_OVAL, :2], grow=-6) > 0.99   # inside the face
    assert face.sum() > 0.1 * size * size
    assert np.abs(back - change)[face].mean() < 0.5 and np.abs(change)[face].mean() > 5


def test_the_generator_repairs_the_still_every_nth_frame_and_every_frame_warps_it(basis, still):
    """GeneratorRenderer: the still is repaired on frame 1 and frame 1 + every; every frame, the repair's
    own too, is the warp of the still as the last repair left it (as a call, whose still is repaired in a
    process of its own, shows it), which differs from the plain still but not in the eyes. At every=1 the
    generator's own frame, nothing carried."""
    from callsynth.face.reference_blend import eyes_mask
    from receiver.renderer import Renderers

    renderer = Renderers(basis, "generator", repair_every=4, mouth_on_frames=False)(still)
    rng = np.random.default_rng(3)
    states = [(renderer.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(5)]
    frames = [renderer.render(s) for s in states]
    assert renderer.still_repairs == 2
    repaired, plain = renderer.warper.still.astype(int), renderer.plain.astype(int)
    eyes = eyes_mask(still.landmarks, plain.shape[0]) > 0.99
    assert np.abs(repaired - plain)[~eyes].mean() > 0.2 and np.array_equal(repaired[eyes], plain[eyes])
    once = Renderers(basis, "generator", repair_every=4, mouth_on_frames=False)(still)
    once.repair_still(states[0])                            # the still as the first repair left it
    for state, frame in zip(states[:4], frames[:4]):
        assert np.array_equal(frame, once.render(state, False))           # its warp
    every = Renderers(basis, "generator", repair_every=1)(still)
    own = every.render(states[0])
    assert np.array_equal(own, every.repair_still(states[0], carry=False))  # the generator's own frame
    assert np.abs(own.astype(int) - every.render(states[0], False)).mean() > 0.2
    assert every.warper.still is every.plain                              # nothing carried at every=1


def test_under_the_generator_every_frame_has_the_mouth_generator_s_mouth_as_in_a_call(basis, still):
    """reenact and eval build the default renderer's frames as a call does (receiver/frame_clock.py: the
    repaired still's warp, its mouth repaired by the mouth generator): an open mouth is the mouth generator's,
    on the repaired still; the still repairer, which shows no frame, loads no mouth generator."""
    from callsynth.face.regions import OPEN_MOUTH, lip_gap
    from receiver.generator_renderer import mouth_frame
    from receiver.renderer import Renderers

    renderer = Renderers(basis, "generator", repair_every=4)(still)
    assert renderer.mouth is not None
    assert Renderers(basis, "generator", mouth_on_frames=False).mouth is None
    rng = np.random.default_rng(5)
    codes = rng.normal(0, 0.6, (200, basis.k))
    gaps = [lip_gap(renderer.target_landmarks(renderer.rest_pose, c)) for c in codes]
    state = (renderer.rest_pose, codes[int(np.argmax(gaps))])
    assert max(gaps) >= OPEN_MOUTH
    frame = renderer.render(state)                                         # repairs the still, then draws
    assert renderer.still_repairs == 1
    assert np.array_equal(frame, mouth_frame(renderer, *renderer.mouth, state))
    assert np.abs(frame.astype(int) - renderer.render(state, False)).mean() > 0.01    # the mouth repaired


def test_layers_gives_the_mouth_generator_the_still_s_own_warp_beside_the_composed_frame(basis, still):
    """The mouth generator is trained on two attribute pictures, the composed frame and the still warped
    alone (train/mouth_pairs.py); a call must hand it the same two. `layers` composed on the warp in place,
    so the 'still alone' it gave was the composed frame itself (session 32)."""
    from callsynth.face.regions import OPEN_MOUTH, lip_gap
    from receiver.renderer import WarpRenderer

    renderer = WarpRenderer(basis, still)
    rng = np.random.default_rng(5)
    codes = rng.normal(0, 0.6, (200, basis.k))
    target = max((renderer.target_landmarks(renderer.rest_pose, c) for c in codes), key=lip_gap)
    assert lip_gap(target) >= OPEN_MOUTH
    base, composed = renderer.layers(target)
    assert np.array_equal(base, renderer.warper.warp(target))
    assert np.array_equal(composed, renderer.compose(target)) and (composed != base).any()
