"""Wire format v8: a packet carries one sent frame, or a bundle of several; a few dozen bytes, quantised
with the basis file's ranges. (v8: the interior code's third byte where a sequence number was, which no
receiver read: packets are ordered and timed by their capture time.)
Layout (little-endian):
    byte 0      version (high nibble) | flags (low nibble)
    bytes 1-2   model tag: the first 16 bits of the basis hash, with the interior codebook's XORed in (v7;
                both ends must read the same two files, model_tag)
    bytes 3-4   the interior code's second and third bytes (v7: the second; v8: both; see below)
    bytes 5-8   capture time, ms, in the low 21 bits (wraps every 35 minutes: receivers unwrap it to the
                candidate nearest their own clock); the interior code's first byte in the next 8 (v7: by
                which entries of the interior codebook, face/interior_code.py, a byte a stage, the real
                mouth's interior differs from the receiver's drawing; 0: none); the mouth source in the top
                3 (v5: which picture's mouth interior the sender saw as most like the camera's: 0 lets the
                receiver choose, i + 1 names the picture of identity index i). Bits the payload had no room
                for, taken from a clock that wrapped every 49.7 days, then 6.2.
    payload     bit-packed pose (rotvec, tx, ty, log scale), K code coefficients, then the gaze (2 x 5 bits,
                iris offset over eye width relative to the still's) and the lip gap's correction (3 bits,
                iris distances the lips part beyond the code's; it fills bits the byte had spare, so a
                packet is no longer than in v3); none with NO_FACE
    last 2      CRC-16/CCITT of everything before
A bundle (FLAG_BUNDLE; a call within a tight budget sends a packet every few frames, and a bundle carries
the motion in between instead of leaving it to interpolation) has, after the header (capture time of its
first frame):
    byte 9      number of frames n (2..MAX_BUNDLE) in the low 4 bits, the Exp-Golomb order k above them
    n-1 bytes   capture-time gap to each next frame, ms (1..255)
    payload     the first frame bit-packed as above, then for each next frame the change of every
                quantised field since the frame before, zigzag-mapped and Exp-Golomb coded (order k, the
                one of 0..3 that makes the bundle smallest): a still field costs one bit
Every frame of a bundle has a face and the same flags; a lost bundle loses only its own frames. A bundle's
header holds one mouth source and one interior code, its last frame's, for all its frames.
Decoding never raises anything but a WireError subclass, whatever the bytes.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from .face.basis import ExpressionBasis
from .face.code import MouthCue, expression_parts, join_expression
from .face.interior_code import shipped_codebook
from .face.pose import Pose
from .face.still import LANDMARK_STEP

VERSION = 8              # 2: gaze after the code, reference stills; 3: bundles; 4: the lip correction;
                         # 5: the mouth source; 6: the identity message's landmarks as int16; 7: the
                         # interior code; 8: its third byte, and no sequence number
HEADER = struct.Struct("<BHHI")     # version | flags, model tag, interior code's 2nd and 3rd bytes, time
CRC_BYTES = 2
OVERHEAD = HEADER.size + CRC_BYTES
MAX_PACKET = 256
CAPTURE_BITS = 21        # of the header's 32-bit time field; the interior code and the mouth source have the rest
CAPTURE_WRAP = 1 << CAPTURE_BITS
CAPTURE_MASK = CAPTURE_WRAP - 1
INTERIOR_BITS = 8                   # of the interior code in the time field: its first byte
MAX_INTERIOR = 0xFFFFFF             # three bytes: face/interior_code.MAX_INDEX - 1
MOUTH_SHIFT = CAPTURE_BITS + INTERIOR_BITS
MOUTH_BITS = 32 - MOUTH_SHIFT
MAX_MOUTH = (1 << MOUTH_BITS) - 1   # mouth sources 1..7 name identity indices 0..6

FLAG_NO_FACE = 0x1       # the sender sees no face: hold, then ease back to the still
FLAG_AUDIO = 0x2         # code derived from speech, not from the camera
FLAG_BUNDLE = 0x4        # several frames: the first in full, the rest as entropy-coded changes
KNOWN_FLAGS = FLAG_NO_FACE | FLAG_AUDIO | FLAG_BUNDLE
MAX_BUNDLE = 8
MAX_GAP_MS = 255         # between consecutive frames of a bundle
EG_ORDERS = (0, 1, 2, 3)
GAZE_RANGE = 0.25        # ± eye widths the iris may move from where the still has it
GAZE_BITS = 5
LIP_RANGE = (-0.06, 0.08)  # iris distances; with LIP_BITS, steps of 0.02 with 0 among them (99 % of the
LIP_BITS = 3               # corrections on 20 clips fell in -0.041..0.054, a /tmp probe; FaceCoder.expression)
LIP_STEP = (LIP_RANGE[1] - LIP_RANGE[0]) / ((1 << LIP_BITS) - 1)   # one level of it, as _dequantise spaces them


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

    capture_ms: int
    pose: Pose | None = None
    code: np.ndarray | None = None
    flags: int = 0
    gaze: np.ndarray | None = None      # (2,) relative to the still's; None means the still's own
    lips: float = 0.0                   # how much further the lips part than the code makes them (iris distances)
    mouth: int = 0                      # the mouth source (0: the receiver's choice; i + 1: identity index i)
    interior: int = 0                   # the interior code (face/interior_code.py; 0: none)

    @classmethod
    def carrying(cls, capture_ms: int, pose: Pose, expression: np.ndarray, k: int, flags: int = 0
                 ) -> "FrameFeatures":
        """A frame with a face whose `expression` (K code coefficients, then the gaze, the lip correction,
        the mouth source and the interior code: FaceCoder.expression) is split into the fields that
        travel: `expression`'s inverse."""
        code, gaze_delta, lips, cue = expression_parts(expression, k)
        return cls(capture_ms, pose, code, flags, gaze_delta, lips, min(cue.source, MAX_MOUTH),
                   min(cue.interior, MAX_INTERIOR))

    @property
    def has_face(self) -> bool:
        return not (self.flags & FLAG_NO_FACE)

    @property
    def expression(self) -> np.ndarray | None:
        """The code followed by the gaze, the lip correction, the mouth source and the interior code (K + 5;
        every decoded packet has them), what the playout timeline interpolates (all but the last two,
        which it takes from the nearer packet); the code alone when no gaze is set."""
        if self.code is None or self.gaze is None:
            return self.code
        return join_expression(self.code, self.gaze, self.lips, MouthCue(self.mouth, self.interior))


def model_tag(basis: ExpressionBasis) -> int:
    """What a packet's and an identity message's tag says both ends share: the basis's 16-bit tag XOR the
    first 16 bits of the interior codebook's (none: 0). A codebook refitted on one end only would have the
    other paint the wrong residuals; like another basis, it is refused with a clear message."""
    codebook = shipped_codebook()
    return basis.tag ^ (int(codebook.tag[:4], 16) if codebook is not None else 0)


def interior_name() -> str:
    """The interior codebook a tag speaks of, for messages."""
    codebook = shipped_codebook()
    return f"interior codebook {codebook.tag}" if codebook is not None else "no interior codebook"


def _header(flags: int, tag: int, capture_ms: int, frame: FrameFeatures | None) -> bytes:
    """The header, with the mouth cue of `frame` (none for None): the capture time's low CAPTURE_BITS in the
    32-bit time field, the interior code's first byte and the mouth source above them, its second and third
    bytes before the field."""
    mouth, interior = (frame.mouth, frame.interior) if frame is not None else (0, 0)
    if not 0 <= mouth <= MAX_MOUTH:
        raise ValueError(f"mouth source {mouth} is not 0..{MAX_MOUTH}")
    if not 0 <= interior <= MAX_INTERIOR:
        raise ValueError(f"interior code {interior} is not 0..{MAX_INTERIOR}")
    field = (capture_ms & CAPTURE_MASK) | ((interior & 0xFF) << CAPTURE_BITS) | (mouth << MOUTH_SHIFT)
    return HEADER.pack((VERSION << 4) | flags, tag, interior >> INTERIOR_BITS, field)


def _header_parts(packet: bytes) -> tuple[int, MouthCue]:
    """(capture time, mouth cue) of a packet's header (_header's inverse)."""
    _, _, interior_high, field = HEADER.unpack_from(packet)
    interior = ((field >> CAPTURE_BITS) & 0xFF) | (interior_high << INTERIOR_BITS)
    return field & CAPTURE_MASK, MouthCue(field >> MOUTH_SHIFT, interior)


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


def _pack_bits_int(values, bits) -> int:
    return int.from_bytes(_pack_bits(values, bits), "little")


def _unpack_bits(data: bytes, bits) -> np.ndarray:
    return _unpack_bits_int(int.from_bytes(data, "little"), bits)


def _unpack_bits_int(acc: int, bits) -> np.ndarray:
    out = []
    for b in bits.tolist():
        out.append(acc & ((1 << int(b)) - 1))
        acc >>= int(b)
    return np.array(out, dtype=np.int64)


class _BitWriter:
    """Bits, least significant first (as _pack_bits)."""

    def __init__(self):
        self.acc, self.n = 0, 0

    def write(self, value: int, bits: int) -> None:
        self.acc |= value << self.n
        self.n += bits

    def exp_golomb(self, value: int, k: int) -> None:
        """value >= 0: z zeros, a one, then the low z + k bits of value + 2**k (z from its length)."""
        m = value + (1 << k)
        z = m.bit_length() - 1 - k
        self.write(1 << z, z + 1)
        self.write(m & ((1 << (z + k)) - 1), z + k)

    def to_bytes(self) -> bytes:
        return self.acc.to_bytes((self.n + 7) // 8, "little")


class _BitReader:
    def __init__(self, data: bytes):
        self.acc, self.left = int.from_bytes(data, "little"), len(data) * 8

    def read(self, bits: int) -> int:
        if bits > self.left:
            raise TruncatedPacket("bundle ends inside a field")
        value = self.acc & ((1 << bits) - 1)
        self.acc >>= bits
        self.left -= bits
        return value

    def exp_golomb(self, k: int) -> int:
        z = 0
        while not self.read(1):
            z += 1
            if z > 24:
                raise CorruptPacket("bundle field longer than any quantised change")
        return ((1 << (z + k)) | self.read(z + k)) - (1 << k)


def _zigzag(d: np.ndarray) -> list[int]:
    return [2 * v if v >= 0 else -2 * v - 1 for v in d.tolist()]


def _unzigzag(u: int) -> int:
    return u >> 1 if not u & 1 else -((u + 1) >> 1)


def exp_golomb_bits(u: np.ndarray, k: int) -> int:
    """What Exp-Golomb order k spends on non-negative integers u."""
    m = np.asarray(u, dtype=np.int64) + (1 << k)
    return int(np.sum(2 * np.floor(np.log2(m)).astype(np.int64) - k + 1))


class Codec:
    """Packs and unpacks FrameFeatures for one basis."""

    def __init__(self, basis: ExpressionBasis):
        self.basis = basis
        self.tag = model_tag(basis)   # SHA-256s over the files: once, not per packet (1 % of a call's CPU)
        self.bits = np.concatenate([basis.pose_bits, basis.code_bits, [GAZE_BITS] * 2, [LIP_BITS]]
                                   ).astype(np.int64)
        self.lo = np.concatenate([basis.pose_lo, basis.code_lo, [-GAZE_RANGE] * 2, [LIP_RANGE[0]]])
        self.hi = np.concatenate([basis.pose_hi, basis.code_hi, [GAZE_RANGE] * 2, [LIP_RANGE[1]]])
        self.payload_bytes = int((self.bits.sum() + 7) // 8)
        self.packet_bytes = OVERHEAD + self.payload_bytes

    def encode(self, frame: FrameFeatures) -> bytes:
        flags = frame.flags & KNOWN_FLAGS
        if frame.pose is None or frame.code is None:
            flags |= FLAG_NO_FACE
        body = _header(flags, self.tag, frame.capture_ms, None if flags & FLAG_NO_FACE else frame)
        if not flags & FLAG_NO_FACE:
            body += _pack_bits(self._quantised(frame), self.bits)
        return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(CRC_BYTES, "little")

    def _quantised(self, frame: FrameFeatures) -> np.ndarray:
        pose = frame.pose
        code = np.asarray(frame.code, dtype=np.float64)
        if code.shape != (self.basis.k,):
            raise ValueError(f"code has {code.size} coefficients, basis has {self.basis.k}")
        gaze = np.zeros(2) if frame.gaze is None else np.asarray(frame.gaze, dtype=np.float64)
        values = np.concatenate([pose.vector(), code, gaze, [frame.lips]])
        return _quantise(values, self.lo, self.hi, self.bits)

    @staticmethod
    def bundles(first: FrameFeatures, then: FrameFeatures) -> bool:
        """Whether `then` may follow `first`'s frames in one bundle (a face in both, one kind, a short gap)."""
        gap = (then.capture_ms - first.capture_ms) & CAPTURE_MASK
        return (first.has_face and then.has_face and first.pose is not None and then.pose is not None
                and (first.flags & KNOWN_FLAGS) == (then.flags & KNOWN_FLAGS) and 1 <= gap <= MAX_GAP_MS)

    def encode_bundle(self, frames: list[FrameFeatures]) -> bytes:
        """One packet for 1..MAX_BUNDLE frames in capture order (see the module's docstring); each frame
        with the one before must pass `bundles`. One frame is an ordinary packet."""
        if len(frames) == 1:
            return self.encode(frames[0])
        if not 2 <= len(frames) <= MAX_BUNDLE:
            raise ValueError(f"a bundle holds 1..{MAX_BUNDLE} frames, not {len(frames)}")
        if not all(self.bundles(a, b) for a, b in pairwise(frames)):
            raise ValueError("bundled frames need faces, one set of flags and 1-255 ms between them")
        first = frames[0]
        flags = (first.flags & KNOWN_FLAGS) | FLAG_BUNDLE
        q = np.stack([self._quantised(f) for f in frames])
        changes = [_zigzag(d) for d in np.diff(q, axis=0)]
        flat = np.concatenate(changes)
        k = min(EG_ORDERS, key=lambda order: exp_golomb_bits(flat, order))
        bits = _BitWriter()
        bits.write(int(_pack_bits_int(q[0], self.bits)), int(self.bits.sum()))
        for u in flat.tolist():
            bits.exp_golomb(int(u), k)
        gaps = bytes((b.capture_ms - a.capture_ms) & 0xFF for a, b in pairwise(frames))
        body = (_header(flags, self.tag, first.capture_ms, frames[-1])
                + bytes([len(frames) | (k << 4)]) + gaps + bits.to_bytes())
        if len(body) + CRC_BYTES > MAX_PACKET:
            raise ValueError(f"bundle of {len(frames)} frames takes {len(body) + CRC_BYTES} bytes")
        return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(CRC_BYTES, "little")

    def _frame(self, capture_ms: int, flags: int, q: np.ndarray, cue: MouthCue) -> FrameFeatures:
        values = _dequantise(q, self.lo, self.hi, self.bits)
        pose = Pose(values[:3].copy(), np.array([values[3], values[4], 0.0]), float(np.exp(values[5])))
        return FrameFeatures.carrying(capture_ms, pose, np.append(values[6:], [cue.source, cue.interior]),
                                      self.basis.k, flags)

    def decode_all(self, packet: bytes) -> list[FrameFeatures]:
        """Every frame one packet carries, oldest first: one, or a bundle's. Raises only WireError."""
        first_byte = self._checked(packet)[0]
        if not first_byte & FLAG_BUNDLE:
            return [self.decode(packet)]
        packet = bytes(packet)
        capture_ms, cue = _header_parts(packet)
        flags = (first_byte & 0xF) & ~FLAG_BUNDLE
        if flags & FLAG_NO_FACE:
            raise CorruptPacket("a bundle of frames without a face")
        body = packet[HEADER.size:-CRC_BYTES]
        if not body:
            raise TruncatedPacket("bundle without its frame count")
        n, k = body[0] & 0xF, body[0] >> 4
        if not 2 <= n <= MAX_BUNDLE or k not in EG_ORDERS:
            raise CorruptPacket(f"bundle of {n} frames at order {k}")
        gaps = body[1:n]
        if len(gaps) != n - 1 or 0 in gaps:
            raise CorruptPacket("bundle's capture-time gaps missing or zero")
        reader = _BitReader(body[n:])
        q = np.empty((n, self.bits.size), dtype=np.int64)
        q[0] = _unpack_bits_int(reader.read(int(self.bits.sum())), self.bits)
        levels = (1 << self.bits) - 1
        for i in range(1, n):
            q[i] = q[i - 1] + np.array([_unzigzag(reader.exp_golomb(k)) for _ in range(self.bits.size)])
        if np.any(q < 0) or np.any(q > levels):
            raise CorruptPacket("bundle field out of range")
        if reader.left >= 8 or reader.acc:
            raise CorruptPacket("bundle carries bits after its last frame")
        frames, when = [], capture_ms
        for i in range(n):
            if i:
                when = (when + gaps[i - 1]) & CAPTURE_MASK
            frames.append(self._frame(when, flags, q[i], cue))
        return frames

    def _checked(self, packet) -> bytes:
        """The packet's header, size, version, checksum and basis checked (WireError otherwise)."""
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            raise WireError(f"packet must be bytes, not {type(packet).__name__}")
        packet = bytes(packet)
        if len(packet) > MAX_PACKET:
            raise OversizedPacket(f"packet of {len(packet)} bytes exceeds {MAX_PACKET}")
        if len(packet) < OVERHEAD:
            raise TruncatedPacket(f"packet of {len(packet)} bytes is shorter than a header")
        first, tag, _, _ = HEADER.unpack_from(packet)
        version, flags = first >> 4, first & 0xF
        if version != VERSION:
            raise VersionMismatch(f"packet version {version}, this receiver speaks {VERSION}: the peer runs "
                                  "another callsynth version")
        body, crc = packet[:-CRC_BYTES], int.from_bytes(packet[-CRC_BYTES:], "little")
        if binascii.crc_hqx(body, 0xFFFF) != crc:
            raise CorruptPacket("checksum mismatch: truncated, damaged or forged packet")
        if tag != self.tag:
            raise BasisMismatch(f"packet made with model tag {tag:04x}, receiver holds {self.basis.name} and "
                                f"{interior_name()} (tag {self.tag:04x}): another basis or interior codebook")
        if flags & ~KNOWN_FLAGS:
            raise CorruptPacket(f"unknown flags {flags:#x}")
        return packet

    def decode(self, packet: bytes) -> FrameFeatures:
        """A packet of one frame (a bundle needs decode_all)."""
        packet = self._checked(packet)
        flags = packet[0] & 0xF
        capture_ms, cue = _header_parts(packet)
        if flags & FLAG_BUNDLE:
            raise CorruptPacket("a bundle of frames where one frame was expected")
        payload = packet[HEADER.size:-CRC_BYTES]
        if flags & FLAG_NO_FACE:
            if payload or cue.source or cue.interior:
                raise CorruptPacket("no-face packet carries a payload, a mouth source or an interior code")
            return FrameFeatures(capture_ms, flags=flags)
        if len(payload) != self.payload_bytes:
            raise TruncatedPacket(f"payload of {len(payload)} bytes, expected {self.payload_bytes}")
        q = _unpack_bits(payload, self.bits)
        if np.any(q > (1 << self.bits) - 1):
            raise CorruptPacket("field out of range")
        return self._frame(capture_ms, flags, q, cue)

    def roundtrip(self, frame: FrameFeatures) -> FrameFeatures:
        return self.decode(self.encode(frame))


# --- The identity message: the still, and each reference still, on the reliable "identity" channel. ----
#
#     bytes 0-3   b"CSID"
#     byte 4      identity message version
#     bytes 5-6   model tag (the basis the landmarks are meant for, and the interior codebook: model_tag)
#     bytes 7-8   number of landmarks N
#     byte 9      index: 0 the still (codes are measured against it; again with the same landmarks, a
#                 sharper copy of it), 1..MAX_REFERENCES a reference still (mouth open with teeth, eyes
#                 closed, ...) that replaces the one of the same index
#     N*3 int16   landmarks in 1/32 crop pixels (sent, not re-tracked, so both ends code from the same face)
#     rest        the picture as JPEG
#
# The landmarks travel with the image because the receiver must rebuild exactly the face the sender
# measures codes against; re-tracking a JPEG would shift them by a pixel or so. A still's landmarks lie on
# a grid of 1/32 pixel (face/still.py), so they travel exactly as whole steps in int16 (version 6; float32
# before): 2,868 bytes for MediaPipe's 478 points instead of 5,736, a fifth of a reference still.

IDENTITY_MAGIC = b"CSID"
IDENTITY_VERSION = 7              # 2: the index byte (reference stills); 3-7: go with packet v3-v7
IDENTITY_HEADER = struct.Struct("<4sBHHB")
MAX_IDENTITY = 60 * 1024          # under SCTP's usual 64 KiB message limit
MAX_REFERENCE = 20 * 1000         # each reference still; the three live ones stay inside 60 KB
MAX_REFERENCES = 7
IDENTITY_JPEG_QUALITIES = (92, 85, 75, 60, 45)   # the best that fits
MAX_JPEG_SIDE = 1024              # refused from the JPEG header, before any pixel is decoded
LANDMARK_DTYPE = np.dtype("<i2")  # landmarks in whole LANDMARK_STEPs: ±1024 pixels, 4 crops either way
LANDMARK_LIMIT = np.iinfo(LANDMARK_DTYPE).max * LANDMARK_STEP


class IdentityError(WireError):
    """An identity message that cannot be used as the caller's still."""


@dataclass
class IdentityMessage:
    """A parsed identity message: the still (index 0) or reference still `index`."""

    index: int
    still: object                 # callsynth.face.still.Still

    @property
    def is_reference(self) -> bool:
        return self.index > 0


def encode_identity(still, basis: ExpressionBasis, index: int = 0, fit_bytes: int | None = None) -> bytes:
    """The message for the still (index 0) or a reference still (1..MAX_REFERENCES), at the best JPEG
    quality that fits MAX_IDENTITY (the still) or MAX_REFERENCE (a reference), and `fit_bytes` when given
    (a small budget's: budget.WirePlan.still_bytes), or failing that at the lowest quality tried."""
    import cv2

    if not 0 <= index <= MAX_REFERENCES:
        raise ValueError(f"reference index {index} outside 0..{MAX_REFERENCES}")
    limit = MAX_REFERENCE if index else MAX_IDENTITY
    target = min(limit, fit_bytes) if fit_bytes else limit
    landmarks = np.asarray(still.landmarks, dtype=np.float64)
    if not np.all(np.isfinite(landmarks)) or np.abs(landmarks).max(initial=0) > LANDMARK_LIMIT:
        raise IdentityError(f"still landmarks are not finite or lie over {LANDMARK_LIMIT:.0f} pixels from the crop")
    landmarks = np.round(landmarks / LANDMARK_STEP).astype(LANDMARK_DTYPE)
    head = IDENTITY_HEADER.pack(IDENTITY_MAGIC, IDENTITY_VERSION, model_tag(basis), landmarks.shape[0], index)
    for quality in IDENTITY_JPEG_QUALITIES:
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(still.image[:, :, ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        message = head + landmarks.tobytes() + jpeg.tobytes()
        if ok and len(message) <= target:
            return message
    if ok and len(message) <= limit:
        return message
    raise IdentityError(f"still does not fit in {limit} bytes even at JPEG quality {IDENTITY_JPEG_QUALITIES[-1]}")


# Two control messages share the identity channel:
# - a hang-up, so a call ends cleanly with the signalling server away:
#     bytes 0-3   b"CSBY"
#     rest        the reason, UTF-8 (at most MAX_REASON bytes)
# - the receiver's receipt for a still, so the sender streams features only once they can be used:
#     bytes 0-3   b"CSOK"
#     byte 4      the index of the still received (0 the still, 1.. a reference still)

# - a part of a longer message: reference stills travel in pieces, paced (sender.stream), so that none
#   holds up the feature packets sharing the SCTP association (a 14 KB reference sent whole delayed them
#   by up to a second in a two-way call on two busy cores):
#     bytes 0-3   b"CSPT"
#     byte 4      message id (wraps at 256)
#     byte 5      this part's number k, from 0
#     byte 6      the number of parts n (1..MAX_PARTS)
#     rest        the k-th piece of the message

HANGUP_MAGIC = b"CSBY"
RECEIPT_MAGIC = b"CSOK"
PART_MAGIC = b"CSPT"
MAX_REASON = 200
PART_BYTES = 1000                 # one SCTP chunk, well under the path MTU
MAX_PARTS = -(-MAX_IDENTITY // PART_BYTES)


@dataclass
class Hangup:
    """The peer ends the call."""

    reason: str


@dataclass
class Receipt:
    """The peer has the still (index 0) or reference still `index`, ready to render with."""

    index: int


@dataclass
class Part:
    """Piece `number` of `count` of message `message_id` (PartAssembler puts them together)."""

    message_id: int
    number: int
    count: int
    data: bytes


def split_message(message: bytes, message_id: int, part_bytes: int = PART_BYTES) -> list[bytes]:
    """`message` as Part messages of at most `part_bytes` of it each."""
    pieces = [message[i:i + part_bytes] for i in range(0, len(message), part_bytes)] or [b""]
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"a message of {len(message)} bytes needs more than {MAX_PARTS} parts")
    return [PART_MAGIC + bytes([message_id & 0xFF, k, len(pieces)]) + piece for k, piece in enumerate(pieces)]


class PartAssembler:
    """Parts back into messages, on a reliable ordered channel: a message's parts come one after another.
    Holds one message at a time and never more than MAX_IDENTITY bytes: a part of another message, or
    out of order, drops what was held (and is said, as a WireError)."""

    def __init__(self):
        self.message_id: int | None = None
        self.pieces: list[bytes] = []

    def add(self, part: Part) -> bytes | None:
        """The whole message once its last part is in, else None."""
        if part.number == 0:
            self.message_id, self.pieces = part.message_id, []
        elif part.message_id != self.message_id or part.number != len(self.pieces):
            self.message_id, self.pieces = None, []
            raise CorruptPacket(f"part {part.number} of message {part.message_id} out of order")
        self.pieces.append(part.data)
        if sum(map(len, self.pieces)) > MAX_IDENTITY:
            self.message_id, self.pieces = None, []
            raise OversizedPacket(f"a message in parts beyond {MAX_IDENTITY} bytes")
        if len(self.pieces) < part.count:
            return None
        whole, self.message_id, self.pieces = b"".join(self.pieces), None, []
        return whole


def encode_hangup(reason: str = "hangup") -> bytes:
    return HANGUP_MAGIC + reason.encode("utf-8")[:MAX_REASON]


def encode_receipt(index: int = 0) -> bytes:
    return RECEIPT_MAGIC + bytes([index])


def decode_control(message: bytes, basis: ExpressionBasis) -> IdentityMessage | Hangup | Receipt | Part:
    """Whatever arrives on the identity channel: a still, a reference still, a hang-up, a receipt or a
    part of a longer message. Raises only WireError subclasses."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        magic = bytes(message[:4])
        if magic == HANGUP_MAGIC:
            if len(message) > len(HANGUP_MAGIC) + MAX_REASON:
                raise OversizedPacket(f"hang-up of {len(message)} bytes")
            return Hangup(bytes(message[4:]).decode("utf-8", "replace") or "hangup")
        if magic == RECEIPT_MAGIC:
            if len(message) != len(RECEIPT_MAGIC) + 1 or message[4] > MAX_REFERENCES:
                raise CorruptPacket("a receipt is 5 bytes with an index up to MAX_REFERENCES")
            return Receipt(message[4])
        if magic == PART_MAGIC:
            if len(message) < 7 or not 1 <= message[6] <= MAX_PARTS or message[5] >= message[6]:
                raise CorruptPacket("a part needs a 7-byte header with its number below its count")
            if len(message) > 7 + PART_BYTES:
                raise OversizedPacket(f"part of {len(message)} bytes")
            return Part(message[4], message[5], message[6], bytes(message[7:]))
    return decode_identity(message, basis)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding it; None if there is none."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def decode_identity(message: bytes, basis: ExpressionBasis) -> IdentityMessage:
    """The still or reference still in an identity message; IdentityError (a WireError) if unusable."""
    import cv2

    from .face.crop import CROP_SIZE
    from .face.still import Still

    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise IdentityError(f"identity message must be bytes, not {type(message).__name__}")
    message = bytes(message)
    if len(message) > MAX_IDENTITY:
        raise OversizedPacket(f"identity message of {len(message)} bytes exceeds {MAX_IDENTITY}")
    if len(message) < 5:
        raise TruncatedPacket("identity message shorter than its header")
    if message[:4] != IDENTITY_MAGIC:
        raise IdentityError("not an identity message (bad magic)")
    if message[4] != IDENTITY_VERSION:
        raise VersionMismatch(f"identity message version {message[4]}, this receiver speaks "
                              f"{IDENTITY_VERSION}: the peer runs another callsynth version")
    if len(message) < IDENTITY_HEADER.size:
        raise TruncatedPacket("identity message shorter than its header")
    _, _, tag, n, index = IDENTITY_HEADER.unpack_from(message)
    ours = model_tag(basis)
    if tag != ours:
        raise BasisMismatch(f"identity made for model tag {tag:04x}, receiver holds {basis.name} and "
                            f"{interior_name()} (tag {ours:04x}): another basis or interior codebook")
    if n != basis.mean_shape.shape[0]:
        raise IdentityError(f"identity carries {n} landmarks, the basis has {basis.mean_shape.shape[0]}")
    if index > MAX_REFERENCES:
        raise IdentityError(f"reference index {index} outside 0..{MAX_REFERENCES}")
    end = IDENTITY_HEADER.size + n * 3 * LANDMARK_DTYPE.itemsize
    if len(message) <= end:
        raise TruncatedPacket("identity message ends before its image")
    landmarks = np.frombuffer(message, dtype=LANDMARK_DTYPE, count=n * 3, offset=IDENTITY_HEADER.size)
    landmarks = landmarks.reshape(n, 3).astype(np.float64) * LANDMARK_STEP     # within ±LANDMARK_LIMIT
    if np.ptp(landmarks[:, 0]) < 16 or np.ptp(landmarks[:, 1]) < 16:
        raise IdentityError("identity landmarks are degenerate (the face spans under 16 pixels)")
    size = jpeg_size(message[end:])
    if size is None:
        raise IdentityError("identity image is not a JPEG")
    if max(size) > MAX_JPEG_SIDE or min(size) < 1:
        raise IdentityError(f"identity image header claims {size[0]}x{size[1]}; refused before decoding")
    image = cv2.imdecode(np.frombuffer(message[end:], dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise IdentityError("identity image is not a decodable JPEG")
    if image.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise IdentityError(f"identity image is {image.shape[1]}x{image.shape[0]}, expected "
                            f"{CROP_SIZE}x{CROP_SIZE}")
    return IdentityMessage(index, Still(np.ascontiguousarray(image[:, :, ::-1]), landmarks))
