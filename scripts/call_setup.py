"""How long a call's data channels take to open once the peers have connected, on the link this runs on.

Two peer connections made as a call makes them (`callsynth.rtc.new_peer_connection`, the call's two data
channels), offer and answer handed over in-process, N times over: for each, the time until ICE and DTLS
connected, and from then until both channels are open at both ends (SCTP's set-up and the channels' own
messages inside DTLS). Run it on a bad link:

    python scripts/policed_link.py --loss 15 -- python scripts/call_setup.py --trials 40
    python scripts/policed_link.py --loss 15 -- python scripts/call_setup.py --trials 40 --aiortc-setup

--aiortc-setup leaves aiortc's SCTP set-up as it comes (a first retransmission after 3 s, and an INIT sent
again under the wrong tag after a collision), to compare with the call's (callsynth.rtc.fix_sctp_setup).
Prints one line a trial, then the spread; exits 1 if a set-up never opened its channels.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth import rtc  # noqa: E402
from callsynth.machine import cpu_description  # noqa: E402


async def one_set_up(timeout_s: float) -> tuple[float | None, float | None]:
    """(seconds until connected, seconds from then until every channel is open at both ends); None: never."""
    offer, answer = rtc.new_peer_connection(), rtc.new_peer_connection()
    started, connected = time.monotonic(), asyncio.Event()
    at: dict[str, float] = {}
    channels = [offer.createDataChannel(rtc.IDENTITY_CHANNEL, ordered=True),
                offer.createDataChannel(rtc.FEATURES_CHANNEL, ordered=False, maxRetransmits=0)]
    arrived: list = []
    all_open = asyncio.Event()

    def check() -> None:
        if len(arrived) == len(channels) and all(c.readyState == "open" for c in channels + arrived):
            all_open.set()

    for channel in channels:
        channel.on("open", check)

    @answer.on("datachannel")
    def _arrived(channel) -> None:
        arrived.append(channel)
        check()

    @offer.on("connectionstatechange")
    def _state() -> None:
        if offer.connectionState == "connected":
            at.setdefault("connected", time.monotonic())
            connected.set()

    try:
        await offer.setLocalDescription(await offer.createOffer())
        await answer.setRemoteDescription(offer.localDescription)
        await answer.setLocalDescription(await answer.createAnswer())
        await offer.setRemoteDescription(answer.localDescription)
        try:
            await asyncio.wait_for(connected.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None, None
        try:
            await asyncio.wait_for(all_open.wait(), timeout_s)
        except asyncio.TimeoutError:
            return at["connected"] - started, None
        return at["connected"] - started, time.monotonic() - at["connected"]
    finally:
        await offer.close()
        await answer.close()


def spread(seconds: list[float | None]) -> str:
    opened = sorted(s for s in seconds if s is not None)
    never = len(seconds) - len(opened)
    if not opened:
        return f"never opened in {len(seconds)} set-ups"
    shares = {"at once": 0.0, "within 1 s": 1.0, "within 3 s": 3.0}
    within = ", ".join(f"{sum(s <= limit + 0.05 for s in opened) / len(seconds):.0%} {name}"
                       for name, limit in shares.items())
    return (f"{within}; median {statistics.median(opened):.2f} s, 90th percentile "
            f"{opened[min(len(opened) - 1, int(0.9 * len(opened)))]:.2f} s, slowest {opened[-1]:.2f} s; "
            f"never {never} of {len(seconds)}")


async def main_async(args) -> int:
    if args.aiortc_setup:
        rtc.fix_sctp_setup = lambda *a, **k: None      # new_peer_connection leaves aiortc's as they are
    after: list[float | None] = []
    for trial in range(args.trials):
        connect_s, open_s = await one_set_up(args.timeout)
        after.append(open_s)
        print(f"set-up {trial + 1}: connected after {connect_s if connect_s is None else round(connect_s, 2)} s, "
              f"channels open {'never' if open_s is None else f'{open_s:.2f} s'} later", flush=True)
    setup = "aiortc's own SCTP set-up" if args.aiortc_setup else "the call's SCTP set-up (fix_sctp_setup)"
    print(f"channels open after connecting, {setup}: {spread(after)}")
    print(f"measured on {cpu_description()}")
    return 1 if None in after else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="set-ups to make, one after another (20)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each stage (30)")
    parser.add_argument("--aiortc-setup", action="store_true", help="aiortc's own SCTP set-up, to compare")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.timeout <= 0:
        parser.error("--trials and --timeout must be above 0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
