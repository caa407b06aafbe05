import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callsynth.face.basis import BasisError, ExpressionBasis
from callsynth.face.pose import Pose
from callsynth.wire import (
    CAPTURE_MASK,
    CAPTURE_WRAP,
    FLAG_AUDIO,
    MAX_MOUTH,
    MAX_PACKET,
    BasisMismatch,
    Codec,
    FrameFeatures,
    OversizedPacket,
    TruncatedPacket,
    VersionMismatch,
    WireError,
)


@pytest.fixture(scope="module")
def codec(basis):
    return Codec(basis)


def sample_features(basis, rng, capture_ms=123456):
    mid = (basis.code_lo + basis.code_hi) / 2
    code = mid + rng.uniform(-0.4, 0.4, basis.k) * (basis.code_hi - basis.code_lo)
    scale = float(np.exp(rng.uniform(basis.pose_lo[5], basis.pose_hi[5])))
    pose = Pose(rng.uniform(-0.4, 0.4, 3), np.r_[rng.uniform(0.3, 0.7, 2), 0.0], scale)
    return FrameFeatures(capture_ms, pose, code)


def test_round_trip_within_one_quantisation_step(basis, codec):
    rng = np.random.default_rng(0)
    for i in range(50):
        f = sample_features(basis, rng, capture_ms=123456 + i)
        packet = codec.encode(f)
        assert len(packet) == codec.packet_bytes
        g = codec.decode(packet)
        assert (g.capture_ms, g.has_face) == (123456 + i, True)
        step = (basis.code_hi - basis.code_lo) / ((1 << basis.code_bits) - 1)
        assert np.all(np.abs(g.code - f.code) <= step / 2 + 1e-12)
        pstep = (basis.pose_hi - basis.pose_lo) / ((1 << basis.pose_bits) - 1)
        assert np.all(np.abs(g.pose.rotvec - f.pose.rotvec) <= pstep[:3] / 2 + 1e-12)
        assert np.all(np.abs(g.pose.translation[:2] - f.pose.translation[:2]) <= pstep[3:5] / 2 + 1e-12)
        assert abs(np.log(g.pose.scale) - np.log(f.pose.scale)) <= pstep[5] / 2 + 1e-12
    f.lips = 0.031
    assert abs(codec.roundtrip(f).lips - 0.04) < 1e-9          # the lip correction, in steps of 0.02
    f.lips = 0.0
    assert codec.roundtrip(f).lips == pytest.approx(0.0, abs=1e-12)   # no correction is sent exactly


def test_payload_fits_4_kbps_at_15_packets_per_second(codec):
    assert codec.packet_bytes * 8 * 15 <= 4000


def test_no_face_and_audio_flags_round_trip(codec):
    g = codec.decode(codec.encode(FrameFeatures(99)))
    assert not g.has_face and g.pose is None and g.code is None
    assert len(codec.encode(FrameFeatures(99))) < codec.packet_bytes
    f = sample_features(codec.basis, np.random.default_rng(1))
    f.flags = FLAG_AUDIO
    assert codec.decode(codec.encode(f)).flags == FLAG_AUDIO


def test_out_of_range_values_are_clipped_not_wrapped(basis, codec):
    f = sample_features(basis, np.random.default_rng(2))
    f.code = basis.code_hi + 100.0
    assert np.allclose(codec.roundtrip(f).code, basis.code_hi)


def test_every_truncation_is_rejected(basis, codec):
    packet = codec.encode(sample_features(basis, np.random.default_rng(3)))
    for n in range(len(packet)):
        with pytest.raises(WireError):
            codec.decode(packet[:n])
    with pytest.raises(TruncatedPacket):
        codec.decode(packet[:4])


def test_every_single_byte_mutation_is_rejected(basis, codec):
    packet = codec.encode(sample_features(basis, np.random.default_rng(4)))
    for i in range(len(packet)):
        for delta in (1, 0x80, 0xFF):
            bad = bytearray(packet)
            bad[i] ^= delta
            with pytest.raises(WireError):
                codec.decode(bytes(bad))


def test_oversized_wrong_version_and_wrong_basis(basis, codec):
    with pytest.raises(OversizedPacket):
        codec.decode(b"\x10" * (MAX_PACKET + 1))
    packet = bytearray(codec.encode(sample_features(basis, np.random.default_rng(5))))
    for old in (1, 3):        # v1: before gaze and references; v3: before the lip correction
        packet[0] = (old << 4) | (packet[0] & 0xF)
        with pytest.raises(VersionMismatch):
            codec.decode(bytes(packet))
    other = dataclasses.replace(basis, meta={**basis.meta, "note": "another basis"})
    assert other.tag != basis.tag
    with pytest.raises(BasisMismatch, match="basis"):
        codec.decode(Codec(other).encode(sample_features(other, np.random.default_rng(6))))
    with pytest.raises(WireError):
        codec.decode("not bytes")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=MAX_PACKET + 8))
def test_random_bytes_never_crash(blob):
    from callsynth.face.basis import load_basis
    codec = Codec(load_basis())
    try:
        f = codec.decode(blob)
    except WireError:
        return
    assert f.pose is None or np.all(np.isfinite(f.code))


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_mutated_packets_are_rejected_or_valid(data):
    from callsynth.face.basis import load_basis
    basis = load_basis()
    codec = Codec(basis)
    packet = bytearray(codec.encode(sample_features(basis, np.random.default_rng(data.draw(st.integers(0, 99))))))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "append", "set"]))
        if op == "flip" and packet:
            packet[data.draw(st.integers(0, len(packet) - 1))] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            packet = packet[: data.draw(st.integers(0, len(packet)))]
        elif op == "append":
            packet += data.draw(st.binary(min_size=1, max_size=300))
        elif op == "set" and packet:
            packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    try:
        f = codec.decode(bytes(packet))
    except WireError:
        return
    if f.has_face:
        assert np.all((f.code >= basis.code_lo - 1e-9) & (f.code <= basis.code_hi + 1e-9))


def test_basis_file_is_checked_on_load(basis, tmp_path):
    path = basis.save(tmp_path)
    assert path.name == f"{basis.name}.npz"
    assert ExpressionBasis.load(path).digest == basis.digest
    data = dict(np.load(path))
    data["code_hi"] = data["code_hi"] * 2
    forged = tmp_path / "forged.npz"
    np.savez(forged, **data)
    with pytest.raises(BasisError, match="hash"):
        ExpressionBasis.load(forged)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a basis")
    with pytest.raises(BasisError, match="not a readable basis file") as refused:
        ExpressionBasis.load(junk)
    assert "pickle" not in str(refused.value)          # numpy's advice to load it unsafely is not passed on


# --- bundles: several frames in one packet, the first in full and the rest as entropy-coded changes ----

def drifting_frames(basis, n, seed=8, start_ms=1000, gap_ms=40):
    """n frames of a face that moves a little from one to the next (as a real one does)."""
    rng = np.random.default_rng(seed)
    first = sample_features(basis, rng)
    frames = []
    for i in range(n):
        drift = rng.normal(0, 0.01, basis.k) * (basis.code_hi - basis.code_lo)
        code = np.clip(first.code + drift * i, basis.code_lo, basis.code_hi)
        pose = Pose(first.pose.rotvec + 0.003 * i, first.pose.translation, first.pose.scale)
        frames.append(FrameFeatures((start_ms + i * gap_ms) & CAPTURE_MASK, pose, code,
                                    gaze=np.array([0.01 * i, -0.02])))
    return frames


def test_a_bundle_carries_every_frame_as_its_own_packet_would(basis, codec):
    frames = drifting_frames(basis, 5, start_ms=CAPTURE_WRAP - 60)       # the clock wraps inside
    packet = codec.encode_bundle(frames)
    got = codec.decode_all(packet)
    assert [g.capture_ms for g in got] == [f.capture_ms for f in frames]
    for g, f in zip(got, frames):
        alone = codec.decode(codec.encode(f))
        assert np.array_equal(g.code, alone.code) and np.array_equal(g.gaze, alone.gaze)
        assert np.array_equal(g.pose.rotvec, alone.pose.rotvec) and g.pose.scale == alone.pose.scale
    # the changes cost far less than whole frames: the point of a bundle
    assert len(packet) < codec.packet_bytes + 4 * (codec.packet_bytes - 9) * 0.7
    assert codec.decode_all(codec.encode(frames[0]))[0].capture_ms == frames[0].capture_ms
    with pytest.raises(WireError, match="bundle"):
        codec.decode(packet)


def test_the_mouth_cue_rides_in_the_header_without_a_byte_more(basis, codec):
    """v5, v7, v8: the sender's mouth source (0..7) takes the top 3 bits of the header's time field, the
    interior code's first byte the 8 below them (the capture time keeps 21) and its second and third bytes
    the two a sequence number had, so a packet is no longer than before; a bundle carries its last frame's
    for all its frames; a no-face packet with either is forged; values past their bits are refused at the
    sender."""
    import binascii

    from callsynth.wire import CAPTURE_BITS, FLAG_NO_FACE, HEADER, MAX_INTERIOR, VERSION, CorruptPacket

    assert CAPTURE_BITS == 21 and MAX_INTERIOR == 0xFFFFFF and codec.packet_bytes == 33
    f = sample_features(basis, np.random.default_rng(3))
    f.capture_ms = CAPTURE_WRAP - 1
    interiors = (0, 1, 255, 256, 0x1234, 0x10000, 0xABCDEF, MAX_INTERIOR)
    for mouth, interior in [(m, i) for m in range(MAX_MOUTH + 1) for i in interiors]:
        f.mouth, f.interior = mouth, interior
        packet = codec.encode(f)
        got = codec.decode(packet)
        assert len(packet) == codec.packet_bytes
        assert (got.mouth, got.interior, got.capture_ms) == (mouth, interior, CAPTURE_WRAP - 1)
        assert list(got.expression[-2:]) == [mouth, interior]
        again = FrameFeatures.carrying(0, got.pose, got.expression, basis.k)
        assert (again.mouth, again.interior) == (mouth, interior)
    f.mouth = MAX_MOUTH + 1
    with pytest.raises(ValueError, match="mouth source"):
        codec.encode(f)
    f.mouth, f.interior = 0, MAX_INTERIOR + 1
    with pytest.raises(ValueError, match="interior code"):
        codec.encode(f)
    frames = drifting_frames(basis, 3)
    for i, frame in enumerate(frames):
        frame.mouth, frame.interior = i + 1, 100000 * (i + 1)
    assert [(g.mouth, g.interior) for g in codec.decode_all(codec.encode_bundle(frames))] == [(3, 300000)] * 3
    for high, field in ((0, 2 << 29), (0, 5 << 21), (7, 0), (0x700, 0)):   # a mouth source, an interior code's bytes
        body = HEADER.pack((VERSION << 4) | FLAG_NO_FACE, codec.tag, high, field | 100)
        with pytest.raises(CorruptPacket, match="mouth source|interior code"):
            codec.decode(body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little"))


def test_frames_that_cannot_share_a_bundle_are_refused(basis, codec):
    a, b = drifting_frames(basis, 2)
    assert Codec.bundles(a, b)
    assert not Codec.bundles(a, FrameFeatures(b.capture_ms))                          # no face
    assert not Codec.bundles(a, dataclasses.replace(b, flags=FLAG_AUDIO))             # another kind
    assert not Codec.bundles(a, dataclasses.replace(b, capture_ms=a.capture_ms + 300))  # too far apart
    with pytest.raises(ValueError):
        codec.encode_bundle([a, dataclasses.replace(b, capture_ms=a.capture_ms)])
    with pytest.raises(ValueError):
        codec.encode_bundle(drifting_frames(basis, 9))


def test_every_truncation_and_mutation_of_a_bundle_is_rejected(basis, codec):
    packet = codec.encode_bundle(drifting_frames(basis, 4))
    for n in range(len(packet)):
        with pytest.raises(WireError):
            codec.decode_all(packet[:n])
    for i in range(len(packet)):
        bad = bytearray(packet)
        bad[i] ^= 0x21
        with pytest.raises(WireError):
            codec.decode_all(bytes(bad))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=MAX_PACKET - 11), st.integers(0, 255))
def test_forged_bundles_with_a_valid_checksum_never_crash(body, count):
    """A forger can compute the CRC: what follows it must still be parsed safely."""
    import binascii

    from callsynth.face.basis import load_basis
    from callsynth.wire import FLAG_BUNDLE, HEADER, VERSION
    basis = load_basis()
    codec = Codec(basis)
    head = HEADER.pack((VERSION << 4) | FLAG_BUNDLE, codec.tag, 0, 1000) + bytes([count])
    forged = head + body
    forged += binascii.crc_hqx(forged, 0xFFFF).to_bytes(2, "little")
    try:
        frames = codec.decode_all(forged)
    except WireError:
        return
    assert 2 <= len(frames) <= 8
    for f in frames:
        assert np.all((f.code >= basis.code_lo - 1e-9) & (f.code <= basis.code_hi + 1e-9))


def test_the_encoder_bundles_codes_sampled_evenly(basis):
    """FeatureEncoder with one packet every 5 frames and 2 codes in it: codes of frames 0 and 3 (gaps 3,
    2), the packet leaving on the second; a frame without a face sends the bundle early."""
    from sender.features import FeatureEncoder

    encoder = FeatureEncoder.__new__(FeatureEncoder)      # its packet logic only: no tracker needed
    encoder.send_every, encoder.codes_per_packet = 5, 2
    assert [encoder._sampled(i) for i in range(10)] == [True, False, False, True, False] * 2
    encoder.codec, encoder.bundle = Codec(basis), []
    frames = drifting_frames(basis, 3)
    assert encoder._packet_for(frames[0]) is None
    assert len(encoder.codec.decode_all(encoder._packet_for(frames[1]))) == 2
    assert encoder._packet_for(frames[2]) is None
    early = encoder._packet_for(FrameFeatures(frames[2].capture_ms + 40))
    assert [f.capture_ms for f in encoder.codec.decode_all(early)] == [frames[2].capture_ms]
