"""The signalling server and its client: rooms of two peers exchanging offer / answer / candidate / bye.

Every message is a JSON object with a "type". A client first sends
    {"type": "join", "room": ROOM_ID, "proof": P, "role": "sender" | "receiver", "token": T}
where ROOM_ID and P come from the call key (`callsynth.call_key`): the server admits a client only if
SHA-256(P) names the room, so only holders of the key can join. It answers {"type": "joined", "room":
ROOM_ID, "peers": N}; the peer already there gets {"type": "peer-joined", "role": ...}. After that, offer /
answer / candidate / bye are relayed to the other peer, each signed by its sender with the call key (the
server cannot read the key and so cannot forge or swap them). When a peer's connection drops without a
bye, the other gets {"type": "peer-left", "role": ...}. Clients send {"type": "ping"} now and then; one
silent for longer than the idle timeout is closed.

The server is built to face the open internet: anything wrong in a message is answered with {"type":
"error", "message": ...} and never ends the server or the connection with an internal error (1011);
connections per address, messages per second and the time to join are capped, and warnings about clients
are rate-limited so a flood cannot fill the log. `--tls-cert/--tls-key` serve wss://.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlparse

import websockets
from websockets.asyncio.server import ServerConnection, serve

from .call_key import CallKey, room_id_for
from .call_options import CALL
from .errors import reason, said

log = logging.getLogger("callsynth.signal")

MAX_MESSAGE = 64 * 1024      # an SDP with candidates is a few kB
HARD_LIMIT = 4 * MAX_MESSAGE  # beyond this websockets itself closes the socket (code 1009)
RELAYED = {"offer", "answer", "candidate", "bye"}
ROLES = {"sender", "receiver"}
OTHER_ROLE = {"sender": "receiver", "receiver": "sender"}
ROOM_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PROOF = 64
HEARTBEAT_S = 15.0
CLOSE_POLICY = 1008          # RFC 6455: the message (or the client's behaviour) violates the server's policy


class SignallingError(RuntimeError):
    """The signalling server refused us or went away."""


@dataclass
class ServerLimits:
    """What one signalling server grants its clients. The `signal` command's options default to these."""

    max_message: int = MAX_MESSAGE
    connections_per_address: int = 16
    max_connections: int = 1000
    messages_per_s: float = 20.0
    burst: int = 40
    join_timeout_s: float = 10.0      # a connection that has not joined by then is closed
    idle_timeout_s: float = 60.0      # a joined client silent this long (no ping either) is closed
    log_lines_per_10s: int = 20       # warnings about clients beyond this are counted, not written


class RateLimitedLog:
    """Warnings about clients, at most `per_window` lines per window; the rest are counted and the count
    is written once the window has passed."""

    def __init__(self, per_window: int, window_s: float = 10.0):
        self.per_window, self.window_s = per_window, window_s
        self.start, self.written, self.suppressed = time.monotonic(), 0, 0

    def warning(self, text: str) -> None:
        now = time.monotonic()
        if now - self.start >= self.window_s:
            if self.suppressed:
                log.warning("%d more client warnings in the last %.0f s not written", self.suppressed,
                            now - self.start)
            self.start, self.written, self.suppressed = now, 0, 0
        if self.written < self.per_window:
            self.written += 1
            log.warning("%s", text[:300])
        else:
            self.suppressed += 1


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Room:
    peers: dict = field(default_factory=dict)  # websocket -> role


@dataclass
class _Client:
    ws: ServerConnection
    room: str | None = None
    said_bye: bool = False


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class SignallingServer:
    def __init__(self, token: str | None = None, limits: ServerLimits | None = None):
        self.token = token
        self.limits = limits or ServerLimits()
        self.rooms: dict[str, Room] = {}
        self.per_address: Counter = Counter()
        self.connections = 0
        self.warnings = RateLimitedLog(self.limits.log_lines_per_10s)

    async def handler(self, ws: ServerConnection) -> None:
        address = (ws.remote_address or ("?",))[0]
        if (self.connections >= self.limits.max_connections
                or self.per_address[address] >= self.limits.connections_per_address):
            self.warnings.warning(f"refused a connection from {address}: too many connections")
            await _send(ws, {"type": "error", "message": "too many connections; try again later"})
            await ws.close(CLOSE_POLICY, "too many connections")
            return
        self.connections += 1
        self.per_address[address] += 1
        client = _Client(ws)
        bucket = TokenBucket(self.limits.messages_per_s, self.limits.burst)
        dropped = 0
        try:
            while True:
                timeout = self.limits.join_timeout_s if client.room is None else self.limits.idle_timeout_s
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout)
                except asyncio.TimeoutError:
                    what = "no join" if client.room is None else "nothing heard"
                    await self._error(ws, f"{what} for {timeout:.0f} s; closing")
                    await ws.close(CLOSE_POLICY, "idle")
                    break
                if not bucket.take():
                    dropped += 1
                    if dropped == 1:
                        await self._error(ws, f"too many messages: at most {self.limits.messages_per_s:.0f} "
                                              "a second; the excess is dropped")
                    if dropped > 10 * self.limits.burst:
                        await ws.close(CLOSE_POLICY, "message rate")
                        break
                    continue
                try:
                    await self._handle(client, raw)
                except websockets.ConnectionClosed:
                    raise
                except Exception as exc:  # noqa: BLE001 - a client's bytes never end the server or a connection
                    await self._error(ws, f"could not handle that message ({type(exc).__name__})")
        except websockets.ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]
            if client.room is not None:
                await self._leave(client)

    async def _handle(self, client: _Client, raw) -> None:
        ws = client.ws
        message = await self._parse(ws, raw)
        if message is None:
            return
        kind = message["type"]
        if kind == "ping":
            return
        if client.room is None:
            if kind != "join":
                await self._error(ws, "join a room first: {\"type\": \"join\", \"room\": ...}")
                return
            client.room = await self._join(ws, message)  # None: not joined (maybe closed)
            return
        if kind == "join":
            await self._error(ws, "already in a room")
        elif kind in RELAYED:
            other = self._other(client.room, ws)
            if other is None:
                await self._error(ws, f"nobody else in the room to receive {kind!r}")
                return
            client.said_bye = client.said_bye or kind == "bye"
            await _send(other, message)
        else:
            await self._error(ws, f"unknown message type {_short(kind)}; expected one of {sorted(RELAYED)}")

    async def _parse(self, ws, raw) -> dict | None:
        size = len(raw)
        if size > self.limits.max_message:
            await self._error(ws, f"message of {size} bytes exceeds the limit of {self.limits.max_message}")
            return None
        if isinstance(raw, bytes):
            await self._error(ws, "binary messages are not accepted; send JSON text")
            return None
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            await self._error(ws, f"malformed JSON: {exc}")
            return None
        except (ValueError, RecursionError) as exc:   # a 5,000-digit number; 50,000 nested brackets
            await self._error(ws, f"JSON this server does not accept: {type(exc).__name__}")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error(ws, "a message must be a JSON object with a string \"type\"")
            return None
        return message

    async def _join(self, ws, message) -> str | None:
        if self.token is not None and not hmac.compare_digest(
                str(message.get("token", "")).encode("utf-8", "replace"), self.token.encode()):
            await self._error(ws, "wrong or missing token")
            await ws.close(4001, "wrong token")
            return None
        room_id, proof, role = message.get("room"), message.get("proof"), message.get("role", "sender")
        if not isinstance(room_id, str) or not ROOM_ID.match(room_id):
            await self._error(ws, "room must be the 32-hex-digit room id made from the call key "
                                  "(callsynth clients make it from --room and --key)")
            return None
        if not isinstance(proof, str) or len(proof) > MAX_PROOF or not hmac.compare_digest(
                room_id_for(proof).encode(), room_id.encode()):
            await self._error(ws, "no proof of the call key for this room: only the call's two parties "
                                  "may join")
            await ws.close(4001, "not a party to this call")
            return None
        if role not in ROLES:
            await self._error(ws, f"role must be one of {sorted(ROLES)}")
            return None
        room = self.rooms.setdefault(room_id, Room())
        if len(room.peers) >= 2:
            await self._error(ws, "the room already has two peers")
            await ws.close(4003, "room full")
            return None
        if role in room.peers.values():
            await self._error(ws, f"the room already has a {role}")
            await ws.close(4003, "role taken")
            return None
        room.peers[ws] = role
        log.info("%s joined room %s… (%d in room)", role, room_id[:8], len(room.peers))
        await _send(ws, {"type": "joined", "room": room_id, "peers": len(room.peers) - 1})
        other = self._other(room_id, ws)
        if other is not None:
            await _send(other, {"type": "peer-joined", "role": role})
        return room_id

    def _other(self, room_id: str, ws):
        room = self.rooms.get(room_id)
        if room is None:
            return None
        return next((peer for peer in room.peers if peer is not ws), None)

    async def _leave(self, client: _Client) -> None:
        room = self.rooms.get(client.room)
        if room is None or client.ws not in room.peers:
            return
        role = room.peers.pop(client.ws)
        log.info("%s left room %s…", role, client.room[:8])
        other = self._other(client.room, client.ws)
        if other is not None and not client.said_bye:
            await _send(other, {"type": "peer-left", "role": role})
        if not room.peers:
            del self.rooms[client.room]

    async def _error(self, ws, text: str) -> None:
        address = (ws.remote_address or ("?",))[0]
        self.warnings.warning(f"client {address}: {text}")
        await _send(ws, {"type": "error", "message": text})


async def _send(ws, message: dict) -> None:
    try:
        await ws.send(json.dumps(message))
    except websockets.ConnectionClosed:
        pass


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The TLS context for wss:// from a certificate chain and its private key (PEM); None for ws://."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("wss:// needs both --tls-cert and --tls-key")
    _pem(cert, "CERTIFICATE", "--tls-cert", "a certificate")
    _pem(key, "PRIVATE KEY", "--tls-key", "a private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise ValueError(f"--tls-key {key} is not the private key of --tls-cert {cert}") from exc
        raise ValueError(f"cannot use {cert} / {key} for TLS: {_tls_words(exc)}") from exc
    return context


def _tls_words(exc: Exception) -> str:
    """OpenSSL's reason alone ("KEY_VALUES_MISMATCH"), or an OS error's words, for a TLS file's message."""
    return getattr(exc, "reason", None) or said(exc)


def _pem(path: str, label: str, option: str, what: str) -> None:
    """ValueError in words unless `path` is a readable PEM file holding a "-----BEGIN ...{label}-----" block:
    OpenSSL said "[SSL] PEM lib (_ssl.c:3905)" for a file that held none, and Python "[Errno 2] No such file
    or directory" without the file's name."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError as exc:
        raise ValueError(f"{option} {path}: {reason(exc)}") from None
    if not re.search(rb"-----BEGIN [A-Z ]*" + label.encode() + rb"-----", text):
        raise ValueError(f"{option} {path} holds no PEM {label.lower()} (-----BEGIN ... {label}-----): give "
                         f"{what} in PEM form")


async def run_server(host: str = CALL.host, port: int = CALL.signalling_port, token: str | None = None,
                     ready: asyncio.Future | None = None, stop: asyncio.Event | None = None,
                     limits: ServerLimits | None = None, tls: ssl.SSLContext | None = None) -> None:
    """Serve until `stop` is set (or forever). `ready` receives the bound port (useful with port 0)."""
    server = SignallingServer(token, limits)
    async with serve(server.handler, host, port, max_size=HARD_LIMIT, ssl=tls) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        log.info("signalling on %s://%s:%d", "wss" if tls else "ws", host, bound)
        if ready is not None and not ready.done():
            ready.set_result(bound)
        await (stop.wait() if stop is not None else asyncio.Future())


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class SignallingClient:
    """One peer's connection to the server: join the call's room, then send and receive relayed messages.

    Outgoing offer / answer / candidate / bye are signed with the call key and incoming ones checked here,
    once: one that fails the check comes out of receive() as {"type": "unsigned", "of": its type} and its
    content is dropped, so no caller can act on it by mistake."""

    def __init__(self, url: str, room: str, role: str, key: CallKey, token: str | None = None,
                 tls_ca: str | None = None):
        self.url, self.room, self.role, self.key, self.token = url, room, role, key, token
        self.tls_ca = tls_ca
        self.ws = None
        self.heartbeat: asyncio.Task | None = None
        if urlparse(url).scheme == "ws" and not _is_loopback(url):
            log.warning("signalling over plain ws:// to %s: the path can read who calls whom; serve "
                        "wss:// (callsynth signal --tls-cert/--tls-key)", urlparse(url).hostname)

    def _tls(self) -> ssl.SSLContext | None:
        if urlparse(self.url).scheme != "wss":
            return None
        if self.tls_ca is not None:
            try:
                _pem(self.tls_ca, "CERTIFICATE", "--tls-ca", "the CA's certificate")
            except ValueError as exc:
                raise SignallingError(str(exc)) from None
        try:
            return ssl.create_default_context(cafile=self.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise SignallingError(f"cannot use {self.tls_ca} as the CA for wss://: {_tls_words(exc)}") from exc

    async def connect(self, timeout: float = 10.0) -> int:
        """Join the room; returns how many peers were already there."""
        await self.close()
        try:
            self.ws = await asyncio.wait_for(
                websockets.connect(self.url, max_size=HARD_LIMIT, ssl=self._tls()), timeout)
        except (OSError, asyncio.TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake,
                ssl.SSLError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                why = "nothing listens there: is `callsynth signal` running, on that port?"
            elif isinstance(exc, asyncio.TimeoutError):    # its own words are none at all
                why = f"no answer within {timeout:g} s"
            else:
                why = said(exc)
            raise SignallingError(f"cannot reach the signalling server at {self.url}: {why}") from exc
        proof = self.key.join_proof(self.room)
        join = {"type": "join", "room": self.key.room_id(self.room), "proof": proof, "role": self.role}
        if self.token:
            join["token"] = self.token
        await self.send(join)
        reply = await asyncio.wait_for(self.receive(), timeout)
        if reply["type"] == "error":
            raise SignallingError(f"signalling server refused to join: {reply.get('message')}")
        if reply["type"] != "joined":
            raise SignallingError(f"unexpected reply to join: {_short(reply, 200)}")
        self.heartbeat = asyncio.create_task(self._heartbeat(self.ws))
        return int(reply.get("peers", 0))

    async def join_free_role(self, roles: tuple[str, ...] = ("sender", "receiver")) -> int:
        """For a two-way call, where both parties run the same command: join in the first of `roles` the
        room does not hold yet (the server admits one client per role, one at a time, so two parties
        starting together still end up one in each). The role is kept for reconnect()."""
        for role in roles:
            self.role = role
            try:
                return await self.connect()
            except SignallingError as exc:
                if f"already has a {role}" not in str(exc) or role == roles[-1]:
                    raise
        raise SignallingError("no role left in the room")

    async def reconnect(self, give_up_after_s: float | None = None) -> int:
        """connect() again and again (backing off to 5 s) until it works; SignallingError after
        give_up_after_s. For a call that goes on while the server is away."""
        deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
        pause = 0.5
        while True:
            try:
                return await self.connect(timeout=5.0)
            except (SignallingError, asyncio.TimeoutError) as exc:
                if deadline is not None and time.monotonic() + pause > deadline:
                    raise SignallingError(f"signalling server still unreachable: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)

    async def _heartbeat(self, ws) -> None:
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                await ws.send(json.dumps({"type": "ping"}))
        except websockets.ConnectionClosed:
            pass

    async def send(self, message: dict) -> None:
        if message.get("type") in RELAYED:
            message = dict(message, mac=self.key.sign(self.role, message))
        if self.ws is None:
            raise SignallingError("not connected to the signalling server")
        try:
            await self.ws.send(json.dumps(message))
        except websockets.ConnectionClosed as exc:
            raise SignallingError(f"signalling connection closed: {exc}") from exc

    async def receive(self) -> dict:
        """The next message; a closed connection raises SignallingError."""
        if self.ws is None:
            raise SignallingError("not connected to the signalling server")
        try:
            raw = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            raise SignallingError(f"signalling connection closed: {exc}") from exc
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError, TypeError) as exc:
            raise SignallingError(f"signalling server sent malformed JSON: {type(exc).__name__}") from exc
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise SignallingError(f"signalling server sent an unexpected message: {_short(message, 200)}")
        if message["type"] in RELAYED and not self.key.verify(OTHER_ROLE[self.role], message):
            log.warning("refused a %s not signed with the call key (a forgery, or a peer without the key)",
                        _short(message["type"]))
            return {"type": "unsigned", "of": message["type"]}
        return message

    async def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None
        if self.ws is not None:
            ws, self.ws = self.ws, None
            await ws.close()
