"""The signalling server and its client: rooms of two peers exchanging offer / answer / candidate / bye.

Every message is a JSON object with a "type". A client first sends
    {"type": "join", "room": R, "role": "sender" | "receiver", "token": T}
and gets {"type": "joined", "room": R, "peers": N} back; the peer already in the room gets
{"type": "peer-joined", "role": ...}. After that, offer / answer / candidate / bye are relayed to the
other peer. When a peer's connection drops without a bye, the other gets {"type": "bye", "reason":
"peer connection lost"}. Anything wrong is answered with {"type": "error", "message": ...}; the server
never crashes on a client's input.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.server import ServerConnection, serve

log = logging.getLogger("callsynth.signal")

MAX_MESSAGE = 64 * 1024      # an SDP with candidates is a few kB
HARD_LIMIT = 4 * MAX_MESSAGE  # beyond this websockets itself closes the socket (code 1009)
RELAYED = {"offer", "answer", "candidate", "bye"}
ROLES = {"sender", "receiver"}
MAX_ROOM_NAME = 64


class SignallingError(RuntimeError):
    """The signalling server refused us or went away."""


@dataclass
class Room:
    peers: dict = field(default_factory=dict)  # websocket -> role


class SignallingServer:
    def __init__(self, token: str | None = None, max_message: int = MAX_MESSAGE):
        self.token = token
        self.max_message = max_message
        self.rooms: dict[str, Room] = {}

    async def handler(self, ws: ServerConnection) -> None:
        room_name = None
        said_bye = False
        try:
            async for raw in ws:
                message = await self._parse(ws, raw)
                if message is None:
                    continue
                kind = message["type"]
                if room_name is None:
                    if kind != "join":
                        await _error(ws, "join a room first: {\"type\": \"join\", \"room\": ...}")
                        continue
                    room_name = await self._join(ws, message)  # None: not joined (maybe closed)
                    continue
                if kind == "join":
                    await _error(ws, f"already in room {room_name!r}")
                elif kind in RELAYED:
                    other = self._other(room_name, ws)
                    if other is None:
                        await _error(ws, f"nobody else in room {room_name!r} to receive {kind!r}")
                        continue
                    said_bye = said_bye or kind == "bye"
                    await _send(other, message)
                else:
                    await _error(ws, f"unknown message type {kind!r}; expected one of "
                                     f"{sorted(RELAYED)}")
        except websockets.ConnectionClosed:
            pass
        finally:
            if room_name is not None:
                await self._leave(room_name, ws, said_bye)

    async def _parse(self, ws, raw) -> dict | None:
        size = len(raw)
        if size > self.max_message:
            await _error(ws, f"message of {size} bytes exceeds the limit of {self.max_message}")
            return None
        if isinstance(raw, bytes):
            await _error(ws, "binary messages are not accepted; send JSON text")
            return None
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            await _error(ws, f"malformed JSON: {exc}")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await _error(ws, "a message must be a JSON object with a string \"type\"")
            return None
        return message

    async def _join(self, ws, message) -> str | None:
        if self.token is not None and not hmac.compare_digest(str(message.get("token", "")),
                                                              self.token):
            await _error(ws, "wrong or missing token")
            await ws.close(4001, "wrong token")
            return None
        room_name, role = message.get("room"), message.get("role", "sender")
        if not isinstance(room_name, str) or not 0 < len(room_name) <= MAX_ROOM_NAME:
            await _error(ws, f"room must be a string of 1 to {MAX_ROOM_NAME} characters")
            return None
        if role not in ROLES:
            await _error(ws, f"role must be one of {sorted(ROLES)}")
            return None
        room = self.rooms.setdefault(room_name, Room())
        if len(room.peers) >= 2:
            await _error(ws, f"room {room_name!r} already has two peers")
            await ws.close(4003, "room full")
            return None
        if role in room.peers.values():
            await _error(ws, f"room {room_name!r} already has a {role}")
            await ws.close(4003, "role taken")
            return None
        room.peers[ws] = role
        log.info("%s joined room %r (%d in room)", role, room_name, len(room.peers))
        await _send(ws, {"type": "joined", "room": room_name, "peers": len(room.peers) - 1})
        other = self._other(room_name, ws)
        if other is not None:
            await _send(other, {"type": "peer-joined", "role": role})
        return room_name

    def _other(self, room_name: str, ws):
        room = self.rooms.get(room_name)
        if room is None:
            return None
        return next((peer for peer in room.peers if peer is not ws), None)

    async def _leave(self, room_name: str, ws, said_bye: bool) -> None:
        room = self.rooms.get(room_name)
        if room is None or ws not in room.peers:
            return
        role = room.peers.pop(ws)
        log.info("%s left room %r", role, room_name)
        other = self._other(room_name, ws)
        if other is not None and not said_bye:
            await _send(other, {"type": "bye", "reason": "peer connection lost", "role": role})
        if not room.peers:
            del self.rooms[room_name]


async def _send(ws, message: dict) -> None:
    try:
        await ws.send(json.dumps(message))
    except websockets.ConnectionClosed:
        pass


async def _error(ws, text: str) -> None:
    log.warning("client error: %s", text)
    await _send(ws, {"type": "error", "message": text})


async def run_server(host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                     ready: asyncio.Future | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or forever). `ready` receives the bound port (useful with port 0)."""
    server = SignallingServer(token)
    async with serve(server.handler, host, port, max_size=HARD_LIMIT) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        log.info("signalling on ws://%s:%d", host, bound)
        if ready is not None and not ready.done():
            ready.set_result(bound)
        await (stop.wait() if stop is not None else asyncio.Future())


class SignallingClient:
    """One peer's connection to the server: join a room, then send and receive relayed messages."""

    def __init__(self, url: str, room: str, role: str, token: str | None = None):
        self.url, self.room, self.role, self.token = url, room, role, token
        self.ws = None

    async def connect(self, timeout: float = 10.0) -> int:
        """Join the room; returns how many peers were already there."""
        try:
            self.ws = await asyncio.wait_for(websockets.connect(self.url, max_size=HARD_LIMIT),
                                             timeout)
        except (OSError, asyncio.TimeoutError, websockets.InvalidURI,
                websockets.InvalidHandshake) as exc:
            raise SignallingError(f"cannot reach the signalling server at {self.url}: {exc}") from exc
        join = {"type": "join", "room": self.room, "role": self.role}
        if self.token:
            join["token"] = self.token
        await self.send(join)
        reply = await self.receive()
        if reply["type"] == "error":
            raise SignallingError(f"signalling server refused to join: {reply.get('message')}")
        if reply["type"] != "joined":
            raise SignallingError(f"unexpected reply to join: {reply}")
        return int(reply.get("peers", 0))

    async def send(self, message: dict) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except websockets.ConnectionClosed as exc:
            raise SignallingError(f"signalling connection closed: {exc}") from exc

    async def receive(self) -> dict:
        """The next message; a closed connection raises SignallingError."""
        try:
            raw = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            raise SignallingError(f"signalling connection closed: {exc}") from exc
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SignallingError(f"signalling server sent malformed JSON: {exc}") from exc
        if not isinstance(message, dict) or "type" not in message:
            raise SignallingError(f"signalling server sent an unexpected message: {message!r}")
        return message

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
