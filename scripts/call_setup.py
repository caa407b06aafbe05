"""How long a call's data channels take to open, on the link this runs on, and where the time goes.

Two peer connections made as a call makes them (`callsynth.rtc.new_peer_connection`, the call's two data
channels), offer and answer handed over in-process, N times over: for each, the time until the offering
side connected (ICE, then DTLS), until DTLS's handshake was done at both ends ("secured"), until SCTP's
association was up at both ends, and until both channels were open at both ends. Run it on a bad link:

    python scripts/policed_link.py --loss 15 -- python scripts/call_setup.py --trials 40
    python scripts/policed_link.py --loss 15 -- python scripts/call_setup.py --trials 40 --aiortc-setup
    python scripts/policed_link.py --loss 15 -- python scripts/call_setup.py --trials 40 --send-once

--aiortc-setup leaves aiortc's SCTP set-up as it comes (a first retransmission after 3 s, and an INIT sent
again under the wrong tag after a collision), to compare with the call's (callsynth.rtc.fix_sctp_setup);
--send-once sends ICE's checks and DTLS's handshake once, as aioice and aiortc do, where a call sends them
twice (callsynth.rtc.fix_ice_checks, fix_dtls_setup). Prints one line a trial, then the spreads; exits 1 if
a set-up never opened its channels.
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


STAGES = ("connected", "secured", "associated", "open")


async def watch_stages(offer, answer, at: dict[str, float], started: float) -> None:
    """Notes when DTLS and SCTP were up at both ends (polled every 10 ms: their states have no common event)."""
    while True:
        sctps = [pc.sctp for pc in (offer, answer)]
        if "secured" not in at and all(s is not None and s.transport.state == "connected" for s in sctps):
            at["secured"] = time.monotonic() - started
        if "associated" not in at and all(
                s is not None and s._association_state == s.State.ESTABLISHED for s in sctps):
            at["associated"] = time.monotonic() - started
        await asyncio.sleep(0.01)


async def one_set_up(timeout_s: float) -> dict[str, float]:
    """Seconds from the start until each of STAGES (those reached within `timeout_s` of the last)."""
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
            at.setdefault("connected", time.monotonic() - started)
            connected.set()

    watcher = asyncio.create_task(watch_stages(offer, answer, at, started))
    try:
        await offer.setLocalDescription(await offer.createOffer())
        await answer.setRemoteDescription(offer.localDescription)
        await answer.setLocalDescription(await answer.createAnswer())
        await offer.setRemoteDescription(answer.localDescription)
        try:
            await asyncio.wait_for(connected.wait(), timeout_s)
            await asyncio.wait_for(all_open.wait(), timeout_s)
            at["open"] = time.monotonic() - started
            for stage in ("secured", "associated"):     # done by now, if between two looks
                at.setdefault(stage, at["open"])
        except asyncio.TimeoutError:
            pass
        return dict(at)
    finally:
        watcher.cancel()
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


def stage_line(at: dict[str, float]) -> str:
    return ", ".join(f"{stage} {at[stage]:.2f} s" if stage in at else f"{stage} never" for stage in STAGES)


async def main_async(args) -> int:
    if args.aiortc_setup:
        rtc.fix_sctp_setup = lambda *a, **k: None      # new_peer_connection leaves aiortc's as they are
    if args.send_once:
        rtc.fix_ice_checks = rtc.fix_dtls_setup = lambda *a, **k: None
    trials: list[dict[str, float]] = []
    for trial in range(args.trials):
        trials.append(await one_set_up(args.timeout))
        print(f"set-up {trial + 1}: {stage_line(trials[-1])}", flush=True)
    setup = ("ICE's checks and DTLS's handshake sent once" if args.send_once
             else "ICE's checks and DTLS's handshake sent twice (fix_ice_checks, fix_dtls_setup)",
             "aiortc's own SCTP set-up" if args.aiortc_setup else "the call's SCTP set-up (fix_sctp_setup)")
    print(f"{setup[0]}, {setup[1]}:")
    print(f"  DTLS done at both ends, from the start: {spread([t.get('secured') for t in trials])}")
    print(f"  channels open after connecting: "
          f"{spread([t['open'] - t['connected'] if 'open' in t else None for t in trials])}")
    print(f"  channels open, from the start: {spread([t.get('open') for t in trials])}")
    print(f"measured on {cpu_description()}")
    return 0 if all("open" in t for t in trials) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="set-ups to make, one after another (20)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each stage (30)")
    parser.add_argument("--aiortc-setup", action="store_true", help="aiortc's own SCTP set-up, to compare")
    parser.add_argument("--send-once", action="store_true",
                        help="ICE's checks and DTLS's handshake sent once, as aioice and aiortc send them, to compare")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.timeout <= 0:
        parser.error("--trials and --timeout must be above 0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
