"""The signalling server against well-behaved and badly-behaved clients, over real websockets."""

import asyncio
import json

import pytest
import websockets

from callsynth.signalling import HARD_LIMIT, MAX_MESSAGE, SignallingClient, SignallingError, run_server


def with_server(test, token=None):
    async def main():
        ready = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        server = asyncio.create_task(run_server("127.0.0.1", 0, token, ready, stop))
        port = await ready
        try:
            await asyncio.wait_for(test(f"ws://127.0.0.1:{port}"), 20)
        finally:
            stop.set()
            await server

    asyncio.run(main())


async def ask(ws, text):
    await ws.send(text)
    return json.loads(await ws.recv())


def test_relays_offer_and_reports_a_vanished_peer():
    async def test(url):
        receiver = SignallingClient(url, "room1", "receiver")
        assert await receiver.connect() == 0
        sender = SignallingClient(url, "room1", "sender")
        assert await sender.connect() == 1
        assert (await receiver.receive())["type"] == "peer-joined"
        await sender.send({"type": "offer", "sdp": "v=0"})
        assert await receiver.receive() == {"type": "offer", "sdp": "v=0"}
        await sender.ws.close()          # gone without a bye
        bye = await receiver.receive()
        assert bye["type"] == "bye" and "lost" in bye["reason"]
        await receiver.close()

    with_server(test)


def test_malformed_and_oversized_messages_get_errors_and_the_server_keeps_serving():
    async def test(url):
        async with websockets.connect(url, max_size=HARD_LIMIT * 2) as ws:
            assert "malformed JSON" in (await ask(ws, "{not json"))["message"]
            assert (await ask(ws, "[1, 2]"))["type"] == "error"
            assert (await ask(ws, json.dumps({"no": "type"})))["type"] == "error"
            assert "join a room first" in (await ask(ws, json.dumps({"type": "offer"})))["message"]
            big = json.dumps({"type": "join", "room": "r", "pad": "x" * (MAX_MESSAGE + 10)})
            assert "exceeds the limit" in (await ask(ws, big))["message"]
            assert "room must be" in (await ask(ws, json.dumps({"type": "join", "room": ""})))["message"]
            # Still usable after all that: a proper join works.
            joined = await ask(ws, json.dumps({"type": "join", "room": "r", "role": "receiver"}))
            assert joined["type"] == "joined"
            assert "unknown message type" in (await ask(ws, json.dumps({"type": "dance"})))["message"]
        async with websockets.connect(url, max_size=HARD_LIMIT * 2) as ws:
            await ws.send("x" * (HARD_LIMIT + 1))   # beyond the hard limit: websockets closes (1009)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009
        # ... and the server is still there for the next client.
        client = SignallingClient(url, "r2", "sender")
        assert await client.connect() == 0
        await client.close()

    with_server(test)


def test_token_is_checked_and_rooms_hold_two():
    async def test(url):
        with pytest.raises(SignallingError, match="token"):
            await SignallingClient(url, "r", "sender", token="wrong").connect()
        a = SignallingClient(url, "r", "sender", token="s3cret")
        b = SignallingClient(url, "r", "receiver", token="s3cret")
        await a.connect()
        await b.connect()
        with pytest.raises(SignallingError, match="two peers"):
            await SignallingClient(url, "r", "receiver", token="s3cret").connect()
        await a.close()
        await b.close()

    with_server(test, token="s3cret")


def test_unreachable_server_is_a_clear_error():
    async def test():
        with pytest.raises(SignallingError, match="cannot reach"):
            await SignallingClient("ws://127.0.0.1:9", "r", "sender").connect(timeout=3)

    asyncio.run(test())
