"""The interior code (callsynth/face/interior_code.py): three bytes a packet that say how the real mouth's
interior differs from the receiver's drawing of it."""

import numpy as np
import pytest

from callsynth.face.basis import load_basis
from callsynth.face.code import MouthCue
from callsynth.face.interior_code import (
    CODES,
    FORMAT,
    STAGES,
    InteriorCodebook,
    InteriorCodeError,
    paint,
    region,
    shipped_codebook,
)
from callsynth.face.mouth_patch import PATCH_H, PATCH_W, MouthPatch
from callsynth.face.regions import INNER_LIPS, polygon_mask
from callsynth.face.still import prepare_still
from callsynth.media import iter_frames, video_info
from callsynth.wire import Codec, WireError, decode_identity
from receiver.renderer import WarpRenderer
from sender.features import FeatureEncoder
from sender.mouth_choice import MouthChoice


@pytest.fixture(scope="module")
def basis():
    return load_basis(None)


def test_the_shipped_codebook_loads_and_a_wrong_file_is_refused(tmp_path):
    book = shipped_codebook()
    assert book.entries.shape == (STAGES, CODES, PATCH_H, PATCH_W) and not book.entries[:, 0].any()
    assert np.abs(book.entries[:, 1:]).max(axis=(2, 3)).min() > 0       # every fitted entry says something
    text = tmp_path / "notes.npz"
    text.write_text("not a codebook")
    wrong_shape = tmp_path / "small.npz"
    np.savez(wrong_shape, entries=np.zeros((16, 4, 4)), format=np.int64(FORMAT))
    later = tmp_path / "later.npz"
    np.savez(later, entries=book.entries, format=np.int64(99))
    for path, message in ((text, "not an interior codebook"), (wrong_shape, "shape"), (later, "format 99"),
                          (tmp_path / "missing.npz", "not an interior codebook")):
        with pytest.raises(InteriorCodeError, match=message):
            InteriorCodebook.load(path)
    saved = book.save(tmp_path / "again.npz")
    assert InteriorCodebook.load(saved).tag == book.tag


def test_an_index_is_its_own_nearest_and_paints_only_the_mouth(basis):
    from callsynth.face.crop import CROP_SIZE

    book = shipped_codebook()
    rng = np.random.default_rng(0)
    target = prepare_still(next(iter_frames(_clip(), 1)), source="first frame").landmarks.copy()
    patch = MouthPatch.at(target, CROP_SIZE)
    weight = region(patch.mask(target))
    strong = np.argsort(-(np.abs(book.entries[0]) * weight).sum(axis=(1, 2)))[:20]
    assert all(book.nearest(book.entries[0, j], weight) == j for j in strong)     # the first stage's alone
    for index in (strong[0] | 5 << 8, strong[1] | 200 << 8 | 17 << 16):            # and with the others'
        assert book.nearest(book.patch(int(index)), weight) == index
    assert book.nearest(np.zeros((PATCH_H, PATCH_W)), weight) == 0        # nothing to say: no change
    image = rng.integers(60, 200, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    for index in (0, CODES ** STAGES, -3):                                # none, and out of range: untouched
        same = image.copy()
        paint(same, target, index)
        assert np.array_equal(same, image)
    painted = image.copy()
    paint(painted, target, int(strong[0]))
    changed = np.abs(painted.astype(int) - image).max(axis=2) > 0
    assert changed.any()
    near_mouth = polygon_mask(image.shape, target[INNER_LIPS], grow=12.0) > 0
    assert not (changed & ~near_mouth).any()                              # the lips' surroundings only
    grey = np.full_like(image, 128)
    paint(grey, target, int(strong[0]))
    assert (np.ptp(grey.astype(int), axis=2) == 0).all() and (grey != 128).any()   # one change in every channel


def test_the_sender_s_search_finds_nearer_chains_than_stage_by_stage(basis):
    """The beam search (InteriorCodebook.nearest) against each stage's nearest entry in turn (a beam of 1): on
    residuals of real scale, the index it picks is never farther from the residual (weighted, over one view or
    two stacked) and on some nearer; its bookkeeping is the distance itself."""
    from callsynth.face.crop import CROP_SIZE

    book = shipped_codebook()
    target = prepare_still(next(iter_frames(_clip(), 1)), source="first frame").landmarks.copy()
    weight = region(MouthPatch.at(target, CROP_SIZE).mask(target))
    rng = np.random.default_rng(3)

    def distance(index, residual, w):
        return float((np.square(w) * np.square(book.patch(index) - residual)).sum())

    nearer = 0
    for views in (1, 1, 1, 2, 2) * 6:
        picks = rng.integers(1, CODES, (views, STAGES))
        residual = np.stack([sum(book.entries[s, p[s]] for s in range(STAGES)) for p in picks])
        residual = residual + rng.normal(0, 12, residual.shape).astype(np.float32)
        w = np.stack([weight] * views)
        greedy, searched = book.nearest(residual, w, beam=1), book.nearest(residual, w)
        assert distance(searched, residual, w) <= distance(greedy, residual, w) + 1e-3
        nearer += distance(searched, residual, w) < distance(greedy, residual, w) - 1e-3
    assert nearer >= 3, nearer


def _clip():
    import os
    from pathlib import Path

    return Path(os.environ.get("CALLSYNTH_DATA", "../shared/data")) / "video/hdtf/WDA_KatieHill_000.mp4"


def test_a_sender_s_interior_code_brings_the_drawn_mouth_nearer_the_real_one(basis):
    """A validation person (no training saw her): the sender's packets carry an interior code on the frames
    whose mouth the receiver draws open and none on the others; drawn with it, the interior inside the
    packet's inner lips is nearer the camera's than drawn without it."""
    from callsynth.face.reference_blend import mouth_weight
    from callsynth.face.regions import OPEN_MOUTH, lip_gap

    frames = list(iter_frames(_clip(), 120))
    still = prepare_still(frames[0], source="first frame")
    encoder = FeatureEncoder(basis, still, fps=video_info(_clip()).fps, send_every=1)
    codec, renderer = Codec(basis), WarpRenderer(basis, still)
    with_code, without, coded, closed_coded, closed = [], [], 0, 0, 0
    try:
        for i, frame in enumerate(frames):
            sent = encoder.process(frame, i * 40)
            if sent.packet is not None and sent.found:
                features = codec.decode(sent.packet)
                target = renderer.target_landmarks(features.pose, features.expression)
                if mouth_weight(target) <= 0:
                    closed += 1
                    closed_coded += features.interior != 0
                    shut = (sent.crop, target)
                elif lip_gap(target) >= OPEN_MOUTH:
                    opened = (sent.crop, target)
                    coded += features.interior != 0
                    inside = polygon_mask(sent.crop.shape, target[INNER_LIPS]) > 0.5
                    for cue, out in ((MouthCue(features.mouth, features.interior), with_code),
                                     (MouthCue(features.mouth, 0), without)):
                        drawn = renderer.compose(target, cue).astype(np.float32)
                        out.append(np.abs(drawn - sent.crop)[inside].mean())
            for message in sent.references:
                try:
                    ref = decode_identity(message, basis)
                except WireError:
                    continue
                renderer.add_reference(ref.index, ref.still)
    finally:
        encoder.close()
    assert len(with_code) >= 30 and closed >= 5
    assert closed_coded == 0 and coded >= 0.8 * len(with_code)
    assert np.mean(with_code) < 0.9 * np.mean(without), (np.mean(with_code), np.mean(without))
    # A packet drawn closed whose frame before it (drawn with its cue, between two packets) is drawn open, as
    # a mouth opens: its code is the open frame's, not none; all closed, none.
    choice = MouthChoice(still)
    assert choice.interior([shut], 0) == 0
    alone = choice.interior([opened], 0)
    assert alone != 0 and choice.interior([shut, opened], 0) == alone


def test_a_fitted_codebook_finds_the_residuals_its_samples_share():
    """fit_codebook on samples whose real interiors are the drawn ones plus one of a few grey patterns: the
    codebook learns them, and with it the interior error falls to a fraction of what it was."""
    from callsynth.face.regions import OPEN_MOUTH
    from callsynth.train.interior_fit import fit_codebook, measure

    rng = np.random.default_rng(1)
    n = 4 * CODES + 64
    patterns = rng.normal(0, 40, (12, PATCH_H, PATCH_W)).astype(np.float32)
    inner = np.zeros((n, PATCH_H, PATCH_W), np.uint8)
    inner[:, 8:16, 10:30] = 255
    drawn = rng.integers(60, 190, (n, PATCH_H, PATCH_W, 3)).astype(np.uint8)
    truth = np.clip(drawn + patterns[rng.integers(0, len(patterns), n)][..., None], 0, 255).astype(np.uint8)
    arrays = {"drawn": drawn, "truth": truth, "inner": inner, "gap": np.full(n, 2 * OPEN_MOUTH, np.float32)}
    book = fit_codebook(arrays, seed=0, log=lambda line: None)
    assert book.entries.shape == (STAGES, CODES, PATCH_H, PATCH_W) and not book.entries[:, 0].any()
    m = measure(book, arrays)
    assert m["samples"] == n and m["coded_share"] > 0.95
    assert m["interior_after"] < 0.25 * m["interior_before"], m
    with pytest.raises(ValueError, match="open-mouth samples"):
        fit_codebook({k: v[:100] for k, v in arrays.items()})


def test_a_peer_with_another_codebook_is_refused_with_a_clear_message(basis, tmp_path, monkeypatch):
    """Both ends must read the same codebook, as the same basis: the packets' and identity messages' tag
    covers both (wire.model_tag), so a codebook refitted on one end only is refused by name, not painted as
    wrong residuals."""
    import callsynth.face.interior_code as interior_code
    from callsynth.wire import BasisMismatch, encode_identity

    from .test_wire import sample_features

    stock = Codec(basis)
    book = shipped_codebook()
    other = InteriorCodebook(np.concatenate([book.entries[:, :1], book.entries[:, 1:][:, ::-1]], axis=1))
    path = other.save(tmp_path / "refitted.npz")
    monkeypatch.setattr(interior_code, "default_codebook_path", lambda: path)
    shipped_codebook.cache_clear()
    try:
        theirs = Codec(basis)
        packet = theirs.encode(sample_features(basis, np.random.default_rng(2)))
        still = prepare_still(next(iter_frames(_clip(), 1)), source="first frame")
        message = encode_identity(still, basis)
    finally:
        monkeypatch.undo()
        shipped_codebook.cache_clear()
    assert theirs.tag != stock.tag and shipped_codebook().tag == book.tag
    for attempt in (lambda: stock.decode(packet), lambda: decode_identity(message, basis)):
        with pytest.raises(BasisMismatch, match="interior codebook"):
            attempt()
    assert stock.decode(stock.encode(sample_features(basis, np.random.default_rng(2)))).has_face
