"""The signalling server against well-behaved and badly-behaved clients, over real websockets (and real TLS)."""

import asyncio
import datetime
import json
import logging

import pytest
import websockets

from callsynth.call_key import CallKey, CallKeyError
from callsynth.signalling import (CLOSE_POLICY, HARD_LIMIT, MAX_MESSAGE, ServerLimits, SignallingClient,
                                  SignallingError, run_server, server_tls)

KEY = CallKey.new()


def with_server(test, token=None, limits=None, tls=None, timeout=30):
    async def main():
        ready = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        server = asyncio.create_task(run_server("127.0.0.1", 0, token, ready, stop, limits=limits, tls=tls))
        port = await ready
        try:
            await asyncio.wait_for(test(f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"), timeout)
        finally:
            stop.set()
            await server

    asyncio.run(main())


async def ask(ws, text):
    await ws.send(text)
    return json.loads(await ws.recv())


def join_message(key=KEY, room="room1", role="receiver", **extra):
    return json.dumps({"type": "join", "room": key.room_id(room), "proof": key.join_proof(room), "role": role,
                       **extra})


def test_relays_signed_offer_and_reports_a_vanished_peer():
    async def test(url):
        receiver = SignallingClient(url, "room1", "receiver", KEY)
        assert await receiver.connect() == 0
        sender = SignallingClient(url, "room1", "sender", KEY)
        assert await sender.connect() == 1
        assert (await receiver.receive())["type"] == "peer-joined"
        await sender.send({"type": "offer", "sdp": "v=0"})
        offer = await receiver.receive()
        assert offer["type"] == "offer" and offer["sdp"] == "v=0" and offer["mac"]
        await sender.ws.close()          # gone without a bye
        assert await receiver.receive() == {"type": "peer-left", "role": "sender"}
        await receiver.close()

    with_server(test)


def test_the_call_key_text_is_checked():
    assert CallKey.parse(KEY.text) == KEY
    for bad in ["", "short", KEY.text + "x", "é" * 22, KEY.text[:-1] + "!"]:
        with pytest.raises(CallKeyError, match="22 characters"):
            CallKey.parse(bad)


def test_a_new_call_key_can_follow_key_on_a_command_line():
    """No new key's text starts with '-' (one in 64 did, and `--key -Abc...` reads as an option: a TURN test
    failed on it); such a key still parses, for `--key=-Abc...` or the environment."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--key")
    for _ in range(2000):
        text = CallKey.new().text
        assert not text.startswith("-") and parser.parse_args(["--key", text]).key == text
    assert CallKey.parse("-" + "A" * 21).text == "-" + "A" * 21


def test_outsiders_without_the_call_key_cannot_join_or_read():
    async def test(url):
        receiver = SignallingClient(url, "room1", "receiver", KEY)
        await receiver.connect()
        # knowing the room's name is not enough: another key names another room, so nobody is there ...
        outsider = SignallingClient(url, "room1", "sender", CallKey.new())
        assert await outsider.connect() == 0
        await outsider.send({"type": "offer", "sdp": "v=0 evil"})
        assert (await outsider.receive())["type"] == "error"           # nobody else in *its* room
        await outsider.close()
        # ... and the room id alone (seen by the server) does not let anyone in without the proof
        async with websockets.connect(url) as ws:
            reply = await ask(ws, json.dumps({"type": "join", "room": KEY.room_id("room1"), "proof": "guess",
                                              "role": "sender"}))
            assert "no proof of the call key" in reply["message"]
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        async with websockets.connect(url) as ws:
            reply = await ask(ws, json.dumps({"type": "join", "room": "room1", "role": "sender"}))
            assert "32-hex-digit room id" in reply["message"]
        # a server (or a path) that holds the join proof may swap the offer's DTLS fingerprint, but cannot
        # sign the swap: the receiver refuses it
        sender = SignallingClient(url, "room1", "sender", KEY)
        signed = {"type": "offer", "sdp": "a=fingerprint:sha-256 AA:BB", "mac": KEY.sign("sender", {
            "type": "offer", "sdp": "a=fingerprint:sha-256 AA:BB"})}
        async with websockets.connect(url) as ws:
            assert (await ask(ws, join_message(role="sender")))["type"] == "joined"
            assert (await receiver.receive())["type"] == "peer-joined"
            await ws.send(json.dumps(dict(signed, sdp="a=fingerprint:sha-256 EV:IL")))
            assert await receiver.receive() == {"type": "unsigned", "of": "offer"}
            await ws.send(json.dumps({"type": "bye", "reason": "hangup"}))       # unsigned hang-up
            assert await receiver.receive() == {"type": "unsigned", "of": "bye"}
            await ws.send(json.dumps(signed))                                  # the genuine one passes
            assert (await receiver.receive())["sdp"] == signed["sdp"]
        # a message signed by the receiver's role is not accepted as the sender's (no reflection)
        assert not KEY.verify("sender", dict(signed, mac=KEY.sign("receiver", signed)))
        await receiver.close()
        await sender.close()

    with_server(test)


def test_malformed_oversized_and_hostile_messages_get_errors_never_1011():
    async def test(url):
        async with websockets.connect(url, max_size=HARD_LIMIT * 2) as ws:
            assert "malformed JSON" in (await ask(ws, "{not json"))["message"]
            assert (await ask(ws, "[1, 2]"))["type"] == "error"
            assert (await ask(ws, json.dumps({"no": "type"})))["type"] == "error"
            assert "join a room first" in (await ask(ws, json.dumps({"type": "offer"})))["message"]
            assert (await ask(ws, "[" * 50_000))["type"] == "error"                 # nesting
            assert (await ask(ws, '{"type": "join", "room": ' + "9" * 5000 + "}"))["type"] == "error"
            big = json.dumps({"type": "join", "room": "r", "pad": "x" * (MAX_MESSAGE + 10)})
            assert "exceeds the limit" in (await ask(ws, big))["message"]
            assert "room id" in (await ask(ws, json.dumps({"type": "join", "room": ""})))["message"]
            # Still usable after all that: a proper join works.
            assert (await ask(ws, join_message()))["type"] == "joined"
            assert "unknown message type" in (await ask(ws, json.dumps({"type": "dance" * 10_000})))["message"]
        async with websockets.connect(url, max_size=HARD_LIMIT * 2) as ws:
            await ws.send("x" * (HARD_LIMIT + 1))   # beyond the hard limit: websockets closes (1009)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009
        # ... and the server is still there for the next client.
        client = SignallingClient(url, "r2", "sender", KEY)
        assert await client.connect() == 0
        await client.close()

    with_server(test)


def test_token_is_checked_even_when_it_is_not_ascii_and_rooms_hold_two():
    async def test(url):
        with pytest.raises(SignallingError, match="token"):
            await SignallingClient(url, "r", "sender", KEY, token="wrong").connect()
        async with websockets.connect(url) as ws:
            assert "token" in (await ask(ws, join_message(token="pässwörd ✓")))["message"]
        a = SignallingClient(url, "r", "sender", KEY, token="s3cret")
        b = SignallingClient(url, "r", "receiver", KEY, token="s3cret")
        await a.connect()
        await b.connect()
        with pytest.raises(SignallingError, match="two peers"):
            await SignallingClient(url, "r", "receiver", KEY, token="s3cret").connect()
        await a.close()
        await b.close()

    with_server(test, token="s3cret")


def test_connections_rate_and_idle_time_are_capped(caplog):
    limits = ServerLimits(connections_per_address=4, messages_per_s=10, burst=20, join_timeout_s=0.5,
                          idle_timeout_s=1.0, log_lines_per_10s=5)

    async def test(url):
        held = [await websockets.connect(url) for _ in range(4)]
        fifth = await websockets.connect(url)
        assert "too many connections" in json.loads(await fifth.recv())["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await fifth.recv()
        assert closed.value.rcvd.code == CLOSE_POLICY
        # one that never joins is closed after the join timeout
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(held[0].recv(), 5)
        assert held[0].close_code == CLOSE_POLICY
        for ws in held[1:]:
            await ws.close()
        async with websockets.connect(url) as ws:
            assert (await ask(ws, join_message()))["type"] == "joined"
            # a flood: 200 messages of 60 KB with a made-up type, as fast as the socket takes them
            junk = json.dumps({"type": "junk", "pad": "x" * 60_000})
            for _ in range(200):
                await ws.send(junk)
            replies = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:               # answered (up to the burst), then dropped; silence → idle close
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["message"])
            assert any("too many messages" in r for r in replies)
            assert sum("unknown message type" in r for r in replies) <= limits.burst + 2
            assert any("nothing heard" in r for r in replies)
        # with pings, a joined client stays
        client = SignallingClient(url, "room1", "receiver", KEY)
        await client.connect()
        for _ in range(3):
            await asyncio.sleep(0.6)
            await client.send({"type": "ping"})
        await client.send({"type": "candidate", "candidate": "x"})
        assert "nobody else" in (await client.receive())["message"]
        await client.close()

    with caplog.at_level(logging.WARNING, logger="callsynth.signal"):
        with_server(test, limits=limits)
    client_lines = [r for r in caplog.records if r.name == "callsynth.signal"]
    assert len(client_lines) <= 3 * limits.log_lines_per_10s      # hundreds of errors, a handful of lines
    assert sum(len(r.getMessage()) for r in client_lines) < 10_000


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files (the `cryptography` package aiortc uses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callsynth test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_wss_serves_the_call_and_plain_or_untrusted_clients_are_refused(tmp_path):
    cert, key = self_signed(tmp_path)

    async def test(url):
        assert url.startswith("wss://")
        receiver = SignallingClient(url, "room1", "receiver", KEY, tls_ca=cert)
        assert await receiver.connect() == 0
        sender = SignallingClient(url, "room1", "sender", KEY, tls_ca=cert)
        assert await sender.connect() == 1
        await sender.send({"type": "offer", "sdp": "v=0"})
        assert (await receiver.receive())["type"] == "peer-joined"
        assert (await receiver.receive())["sdp"] == "v=0"
        with pytest.raises(SignallingError, match="cannot reach"):     # certificate not trusted
            await SignallingClient(url, "room1", "sender", KEY).connect(timeout=5)
        with pytest.raises(SignallingError, match="cannot reach"):     # plain ws:// to a TLS port
            await SignallingClient(url.replace("wss", "ws"), "room1", "sender", KEY).connect(timeout=5)
        await sender.close()
        await receiver.close()

    with_server(test, tls=server_tls(cert, key))
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        server_tls(cert, None)


def test_tls_files_that_are_not_what_they_should_be_are_said_in_words(tmp_path):
    """OpenSSL said "[SSL] PEM lib (_ssl.c:3905)" of a certificate or key file that holds none, "[X509:
    KEY_VALUES_MISMATCH] key values mismatch" of another certificate's key, and Python "[Errno 2] No such
    file or directory" without the file's name."""
    cert, key = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed(other)
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate")
    for args, said in (((str(text), key), f"--tls-cert {text} holds no PEM certificate"),
                       ((key, key), f"--tls-cert {key} holds no PEM certificate"),
                       ((cert, str(text)), f"--tls-key {text} holds no PEM private key"),
                       ((cert, other_key), f"--tls-key {other_key} is not the private key of --tls-cert {cert}"),
                       ((str(tmp_path / "gone.pem"), key), f"--tls-cert {tmp_path / 'gone.pem'}: No such file")):
        with pytest.raises(ValueError) as refused:
            server_tls(*args)
        assert str(refused.value).startswith(said) and "_ssl.c" not in str(refused.value), refused.value
    for ca, said in ((str(text), f"--tls-ca {text} holds no PEM certificate"),
                     (key, f"--tls-ca {key} holds no PEM certificate"),
                     (str(tmp_path / "gone.pem"), f"--tls-ca {tmp_path / 'gone.pem'}: No such file")):
        with pytest.raises(SignallingError) as refused:
            asyncio.run(SignallingClient("wss://127.0.0.1:9", "room1", "sender", KEY, tls_ca=ca).connect(timeout=5))
        assert str(refused.value).startswith(said), refused.value


def test_unreachable_server_is_a_clear_error():
    async def test():
        with pytest.raises(SignallingError, match="cannot reach") as said:
            await SignallingClient("ws://127.0.0.1:9", "r", "sender", KEY).connect(timeout=3)
        assert str(said.value) == ("cannot reach the signalling server at ws://127.0.0.1:9: nothing listens "
                                   "there: is `callsynth signal` running, on that port?")
        with pytest.raises(SignallingError, match="still unreachable"):
            await SignallingClient("ws://127.0.0.1:9", "r", "sender", KEY).reconnect(give_up_after_s=1.5)
        # a port that takes the connection and never answers the handshake: the reason was empty
        mute = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = mute.sockets[0].getsockname()[1]
        with pytest.raises(SignallingError) as said:
            await SignallingClient(f"ws://127.0.0.1:{port}", "r", "sender", KEY).connect(timeout=1)
        assert str(said.value) == f"cannot reach the signalling server at ws://127.0.0.1:{port}: no answer within 1 s"
        mute.close()

    asyncio.run(test())
