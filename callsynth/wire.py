"""Wire format v1: one packet per sent frame, a few dozen bytes, quantised with the basis file's ranges.

Layout (little-endian):
    byte 0      version (high nibble) | flags (low nibble)
    bytes 1-2   basis tag (first 16 bits of the basis hash)
    bytes 3-4   sequence number (wraps)
    bytes 5-8   capture time, ms (wraps)
    payload     bit-packed pose (rotvec, tx, ty, log scale) then K code coefficients; none with NO_FACE
    last 2      CRC-16/CCITT of everything before

Decoding never raises anything but a WireError subclass, whatever the bytes.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np

from .face.basis import ExpressionBasis
from .face.pose import Pose

VERSION = 1
HEADER = struct.Struct("<BHHI")
CRC_BYTES = 2
OVERHEAD = HEADER.size + CRC_BYTES
MAX_PACKET = 256

FLAG_NO_FACE = 0x1       # the sender sees no face: hold, then ease back to the still
FLAG_AUDIO = 0x2         # code derived from speech, not from the camera
KNOWN_FLAGS = FLAG_NO_FACE | FLAG_AUDIO


class WireError(ValueError):
    """Any packet that cannot be trusted."""


class TruncatedPacket(WireError):
    pass


class OversizedPacket(WireError):
    pass


class VersionMismatch(WireError):
    pass


class BasisMismatch(WireError):
    pass


class CorruptPacket(WireError):
    pass


@dataclass
class FrameFeatures:
    """What one packet says about one frame."""

    seq: int
    capture_ms: int
    pose: Pose | None = None
    code: np.ndarray | None = None
    flags: int = 0

    @property
    def has_face(self) -> bool:
        return not (self.flags & FLAG_NO_FACE)


def _quantise(values, lo, hi, bits):
    levels = (1 << bits.astype(np.int64)) - 1
    unit = (np.clip(values, lo, hi) - lo) / (hi - lo)
    return np.round(unit * levels).astype(np.int64)


def _dequantise(q, lo, hi, bits):
    levels = (1 << bits.astype(np.int64)) - 1
    return lo + q / levels * (hi - lo)


def _pack_bits(values, bits) -> bytes:
    acc, n = 0, 0
    for v, b in zip(values.tolist(), bits.tolist()):
        acc |= int(v) << n
        n += int(b)
    return acc.to_bytes((n + 7) // 8, "little")


def _unpack_bits(data: bytes, bits) -> np.ndarray:
    acc = int.from_bytes(data, "little")
    out = []
    for b in bits.tolist():
        out.append(acc & ((1 << int(b)) - 1))
        acc >>= int(b)
    return np.array(out, dtype=np.int64)


class Codec:
    """Packs and unpacks FrameFeatures for one basis."""

    def __init__(self, basis: ExpressionBasis):
        self.basis = basis
        self.bits = np.concatenate([basis.pose_bits, basis.code_bits]).astype(np.int64)
        self.lo = np.concatenate([basis.pose_lo, basis.code_lo])
        self.hi = np.concatenate([basis.pose_hi, basis.code_hi])
        self.payload_bytes = int((self.bits.sum() + 7) // 8)
        self.packet_bytes = OVERHEAD + self.payload_bytes

    def encode(self, frame: FrameFeatures) -> bytes:
        flags = frame.flags & KNOWN_FLAGS
        if frame.pose is None or frame.code is None:
            flags |= FLAG_NO_FACE
        body = HEADER.pack((VERSION << 4) | flags, self.basis.tag, frame.seq & 0xFFFF,
                           frame.capture_ms & 0xFFFFFFFF)
        if not flags & FLAG_NO_FACE:
            pose = frame.pose
            values = np.concatenate([pose.rotvec, pose.translation[:2], [np.log(pose.scale)],
                                     np.asarray(frame.code, dtype=np.float64)])
            if values.shape != self.lo.shape:
                raise ValueError(f"code has {values.size - 6} coefficients, basis has {self.basis.k}")
            body += _pack_bits(_quantise(values, self.lo, self.hi, self.bits), self.bits)
        return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(CRC_BYTES, "little")

    def decode(self, packet: bytes) -> FrameFeatures:
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            raise WireError(f"packet must be bytes, not {type(packet).__name__}")
        packet = bytes(packet)
        if len(packet) > MAX_PACKET:
            raise OversizedPacket(f"packet of {len(packet)} bytes exceeds {MAX_PACKET}")
        if len(packet) < OVERHEAD:
            raise TruncatedPacket(f"packet of {len(packet)} bytes is shorter than a header")
        first, tag, seq, capture_ms = HEADER.unpack_from(packet)
        version, flags = first >> 4, first & 0xF
        if version != VERSION:
            raise VersionMismatch(f"packet version {version}, this receiver speaks {VERSION}")
        body, crc = packet[:-CRC_BYTES], int.from_bytes(packet[-CRC_BYTES:], "little")
        if binascii.crc_hqx(body, 0xFFFF) != crc:
            raise CorruptPacket("checksum mismatch: truncated, damaged or forged packet")
        if tag != self.basis.tag:
            raise BasisMismatch(f"packet made with basis tag {tag:04x}, receiver holds "
                                f"{self.basis.name} (tag {self.basis.tag:04x})")
        if flags & ~KNOWN_FLAGS:
            raise CorruptPacket(f"unknown flags {flags:#x}")
        payload = body[HEADER.size:]
        if flags & FLAG_NO_FACE:
            if payload:
                raise CorruptPacket("no-face packet carries a payload")
            return FrameFeatures(seq, capture_ms, flags=flags)
        if len(payload) != self.payload_bytes:
            raise TruncatedPacket(f"payload of {len(payload)} bytes, expected {self.payload_bytes}")
        q = _unpack_bits(payload, self.bits)
        if np.any(q > (1 << self.bits) - 1):
            raise CorruptPacket("field out of range")
        values = _dequantise(q, self.lo, self.hi, self.bits)
        pose = Pose(values[:3].copy(), np.array([values[3], values[4], 0.0]), float(np.exp(values[5])))
        return FrameFeatures(seq, capture_ms, pose, values[6:].copy(), flags)

    def roundtrip(self, frame: FrameFeatures) -> FrameFeatures:
        return self.decode(self.encode(frame))


# --- The identity message: the still, sent once on the reliable "identity" channel. ---------------------
#
#     bytes 0-3   b"CSID"
#     byte 4      identity message version
#     bytes 5-6   basis tag the landmarks are meant for
#     bytes 7-8   number of landmarks N
#     N*3 float32 still landmarks in crop pixels (sent, not re-tracked, so both ends code from the same face)
#     rest        the still as JPEG
#
# The landmarks travel with the image because the receiver must rebuild exactly the face the sender
# measures codes against; re-tracking a JPEG would shift them by a pixel or so.

IDENTITY_MAGIC = b"CSID"
IDENTITY_VERSION = 1
IDENTITY_HEADER = struct.Struct("<4sBHH")
MAX_IDENTITY = 60 * 1024          # under SCTP's usual 64 KiB message limit
IDENTITY_JPEG_QUALITY = 92


class IdentityError(WireError):
    """An identity message that cannot be used as the caller's still."""


def encode_identity(still, basis: ExpressionBasis) -> bytes:
    import cv2

    landmarks = np.asarray(still.landmarks, dtype="<f4")
    head = IDENTITY_HEADER.pack(IDENTITY_MAGIC, IDENTITY_VERSION, basis.tag, landmarks.shape[0])
    for quality in (IDENTITY_JPEG_QUALITY, 85, 75, 60):
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(still.image[:, :, ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        message = head + landmarks.tobytes() + jpeg.tobytes()
        if ok and len(message) <= MAX_IDENTITY:
            return message
    raise IdentityError(f"still does not fit in {MAX_IDENTITY} bytes even at JPEG quality 60")


def decode_identity(message: bytes, basis: ExpressionBasis):
    """The still (callsynth.face.still.Still) in an identity message; IdentityError if it is unusable."""
    import cv2

    from .face.crop import CROP_SIZE
    from .face.still import Still

    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise IdentityError(f"identity message must be bytes, not {type(message).__name__}")
    message = bytes(message)
    if len(message) > MAX_IDENTITY:
        raise OversizedPacket(f"identity message of {len(message)} bytes exceeds {MAX_IDENTITY}")
    if len(message) < IDENTITY_HEADER.size:
        raise TruncatedPacket("identity message shorter than its header")
    magic, version, tag, n = IDENTITY_HEADER.unpack_from(message)
    if magic != IDENTITY_MAGIC:
        raise IdentityError("not an identity message (bad magic)")
    if version != IDENTITY_VERSION:
        raise VersionMismatch(f"identity message version {version}, this receiver speaks "
                              f"{IDENTITY_VERSION}")
    if tag != basis.tag:
        raise BasisMismatch(f"identity made for basis tag {tag:04x}, receiver holds {basis.name}")
    if n != basis.mean_shape.shape[0]:
        raise IdentityError(f"identity carries {n} landmarks, the basis has {basis.mean_shape.shape[0]}")
    end = IDENTITY_HEADER.size + n * 3 * 4
    if len(message) <= end:
        raise TruncatedPacket("identity message ends before its image")
    landmarks = np.frombuffer(message, dtype="<f4", count=n * 3, offset=IDENTITY_HEADER.size)
    landmarks = landmarks.reshape(n, 3).astype(np.float64)
    if not np.all(np.isfinite(landmarks)) or np.abs(landmarks[:, :2]).max() > 4 * CROP_SIZE:
        raise IdentityError("identity landmarks are not finite or lie far outside the crop")
    image = cv2.imdecode(np.frombuffer(message[end:], dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise IdentityError("identity image is not a decodable JPEG")
    if image.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise IdentityError(f"identity image is {image.shape[1]}x{image.shape[0]}, expected "
                            f"{CROP_SIZE}x{CROP_SIZE}")
    return Still(np.ascontiguousarray(image[:, :, ::-1]), landmarks)
