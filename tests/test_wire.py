import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callsynth.face.basis import BasisError, ExpressionBasis
from callsynth.face.pose import Pose
from callsynth.wire import (FLAG_AUDIO, MAX_PACKET, Codec, FrameFeatures, BasisMismatch,
                            OversizedPacket, TruncatedPacket, VersionMismatch, WireError)


@pytest.fixture(scope="module")
def codec(basis):
    return Codec(basis)


def sample_features(basis, rng, seq=7):
    mid = (basis.code_lo + basis.code_hi) / 2
    code = mid + rng.uniform(-0.4, 0.4, basis.k) * (basis.code_hi - basis.code_lo)
    pose = Pose(rng.uniform(-0.4, 0.4, 3), np.r_[rng.uniform(0.3, 0.7, 2), 0.0], float(np.exp(rng.uniform(basis.pose_lo[5], basis.pose_hi[5]))))
    return FrameFeatures(seq, 123456, pose, code)


def test_round_trip_within_one_quantisation_step(basis, codec):
    rng = np.random.default_rng(0)
    for i in range(50):
        f = sample_features(basis, rng, seq=i)
        packet = codec.encode(f)
        assert len(packet) == codec.packet_bytes
        g = codec.decode(packet)
        assert (g.seq, g.capture_ms, g.has_face) == (i, 123456, True)
        step = (basis.code_hi - basis.code_lo) / ((1 << basis.code_bits) - 1)
        assert np.all(np.abs(g.code - f.code) <= step / 2 + 1e-12)
        pstep = (basis.pose_hi - basis.pose_lo) / ((1 << basis.pose_bits) - 1)
        assert np.all(np.abs(g.pose.rotvec - f.pose.rotvec) <= pstep[:3] / 2 + 1e-12)
        assert np.all(np.abs(g.pose.translation[:2] - f.pose.translation[:2]) <= pstep[3:5] / 2 + 1e-12)
        assert abs(np.log(g.pose.scale) - np.log(f.pose.scale)) <= pstep[5] / 2 + 1e-12


def test_payload_fits_4_kbps_at_15_packets_per_second(codec):
    assert codec.packet_bytes * 8 * 15 <= 4000


def test_no_face_and_audio_flags_round_trip(codec):
    g = codec.decode(codec.encode(FrameFeatures(3, 99)))
    assert not g.has_face and g.pose is None and g.code is None
    assert len(codec.encode(FrameFeatures(3, 99))) < codec.packet_bytes
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
    packet[0] = (1 << 4) | (packet[0] & 0xF)        # a v1 packet: before gaze and references
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
    with pytest.raises(BasisError):
        ExpressionBasis.load(junk)
