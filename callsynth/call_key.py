"""The call key: a random secret that only the call's two parties hold, passed between them out of band
(read out, pasted in a chat) the way a meeting link is.

Everything the signalling server and the path to it see is derived from the key one-way, so neither can
take part in the call:
- the server knows a room only as `room_id` = SHA-256(join proof)[:32 hex]; a client proves it holds the key
  by sending the join proof = HMAC(key, "join" | room name), which the server hashes and compares. Who does
  not hold the key cannot name the room, let alone join it.
- every offer, answer, candidate and hang-up a peer sends carries an HMAC over its role, its type and its
  content under a second key derived from the call key, which the server never sees. The SDP holds the DTLS
  certificate fingerprints, so a server or a path in between that swaps them (to sit in the middle of the
  media) cannot sign the swap, and the peer refuses it.
A peer that rejoins signs with the same key, which proves it is the same party (there are only two).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_BYTES = 16
KEY_TEXT = re.compile(r"^[A-Za-z0-9_-]{22}$")
ROOM_ID_HEX = 32
ENV_VAR = "CALLSYNTH_CALL_KEY"


class CallKeyError(ValueError):
    """Not a call key as `callsynth` prints them."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def room_id_for(proof: str) -> str:
    """What the server calls the room whose join proof is `proof` (the server checks joins with this)."""
    return hashlib.sha256(proof.encode("utf-8", "surrogatepass")).hexdigest()[:ROOM_ID_HEX]


@dataclass(frozen=True)
class CallKey:
    secret: bytes

    @classmethod
    def new(cls) -> "CallKey":
        """A fresh key whose text does not start with '-': one in 64 did, and `--key -Abc...` on a command
        line reads as an option, not a value (a CI run's TURN test failed on it)."""
        while True:
            key = cls(secrets.token_bytes(KEY_BYTES))
            if not key.text.startswith("-"):
                return key

    @classmethod
    def parse(cls, text: str) -> "CallKey":
        text = (text or "").strip()
        if not KEY_TEXT.match(text):
            raise CallKeyError("a call key is 22 characters of A-Z a-z 0-9 _ - (as `callsynth send` or "
                               "`callsynth key` prints it)")
        return cls(base64.urlsafe_b64decode(text + "=="))

    @property
    def text(self) -> str:
        return _b64(self.secret)

    def _derive(self, label: str) -> bytes:
        return hmac.new(self.secret, label.encode(), hashlib.sha256).digest()

    def join_proof(self, room: str) -> str:
        return _b64(hmac.new(self._derive("callsynth join"), room.encode(), hashlib.sha256).digest())

    def room_id(self, room: str) -> str:
        return room_id_for(self.join_proof(room))

    def sign(self, role: str, message: dict) -> str:
        """The MAC a peer of `role` attaches to a signalling message (over every field but the MAC)."""
        body = repr(sorted((k, str(v)) for k, v in message.items() if k != "mac"))
        return _b64(hmac.new(self._derive("callsynth signal"), f"{role}\n{body}".encode("utf-8", "replace"),
                             hashlib.sha256).digest())

    def verify(self, role: str, message: dict) -> bool:
        mac = message.get("mac")
        return isinstance(mac, str) and hmac.compare_digest(mac.encode("utf-8", "replace"),
                                                            self.sign(role, message).encode())
