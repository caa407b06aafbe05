"""Run a command on a bad link: a network namespace of its own (its loopback only) where iptables drops
each destination port's UDP beyond KBPS (hashlimit; a burst of a second's worth passes), as a narrow
uplink does, and/or LOSS % of all UDP datagrams at random (the statistic match), as a poor radio link
does, and/or every UDP datagram for SECONDS from AT s after the command started (`--outage AT:SECONDS`), as
a train's tunnel does, and/or holds each sending socket's UDP beyond QUEUE kbit/s in a buffer of its own,
BUFFER ms deep (`--queue`; what overflows it is dropped), as a slow uplink with a deep buffer does: packets
wait, round trips grow (with `--shared`, one queue for everything both ways, as a half-duplex radio link's
air is shared). Everything the command starts, and the calls between them, stay inside it; the
namespace is removed after. Needs root, `ip`, iptables (with the hashlimit and statistic matches) and, for
--queue, tc (htb, bfifo, the u32 classifier).

    python scripts/policed_link.py --kbps 40 -- python -m callsynth.cli demo --budget auto ...
    python scripts/policed_link.py --loss 15 -- python -m callsynth.cli demo --two-way ...
    python scripts/policed_link.py --outage 12:4 -- python -m callsynth.cli demo --two-way ...
    python scripts/policed_link.py --queue 32 -- python -m callsynth.cli demo --budget auto ...

Prints the link's counters (datagrams and bytes dropped) when the command ends; exits with its status."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import uuid


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


QUEUES = 256      # one per sending socket, picked by the low 8 bits of its port


def queue(ns: str, kbps: float, buffer_ms: float, shared: bool = False) -> None:
    """In namespace `ns`, each UDP socket's datagrams leave at `kbps` at most, the rest waiting in a FIFO
    of `buffer_ms` at that rate (dropped beyond it): an htb class with a bfifo for each of QUEUES buckets,
    the u32 classifier hashing the source port into them (the kernel here has no `flow` classifier); other
    traffic (the signalling's TCP) is not classified, and htb sends it at once. `shared`: one token bucket
    (tbf) for everything instead. Loopback's MTU becomes an Ethernet-sized 1500: its 64 KiB would outgrow
    the buckets."""
    depth = max(1600, round(kbps * 1000 / 8 * buffer_ms / 1000))
    if shared:
        batch = [f"qdisc add dev lo root tbf rate {kbps:g}kbit burst 1600 limit {depth}"]
    else:
        batch = ["qdisc add dev lo root handle 1: htb default ffff",
                 "filter add dev lo parent 1:0 prio 1 handle 2: protocol ip u32 divisor 256"]
        for i in range(QUEUES):
            batch += [f"class add dev lo parent 1: classid 1:{i + 1:x} htb rate {kbps:g}kbit ceil {kbps:g}kbit "
                      "burst 1600b cburst 1600b quantum 1514",
                      f"qdisc add dev lo parent 1:{i + 1:x} handle {i + 0x100:x}: bfifo limit {depth}",
                      f"filter add dev lo parent 1:0 prio 1 protocol ip u32 ht 2:{i:x}: "
                      f"match u32 0 0 flowid 1:{i + 1:x}"]
        # the UDP source port is the high half of the word 20 bytes into an IPv4 header without options
        batch.append("filter add dev lo parent 1:0 prio 1 protocol ip u32 ht 800:: match ip protocol 17 0xff "
                     "hashkey mask 0x00ff0000 at 20 link 2:")
    sh("ip", "-n", ns, "link", "set", "lo", "mtu", "1500")
    subprocess.run(["ip", "netns", "exec", ns, "tc", "-batch", "-"], input="\n".join(batch) + "\n",
                   check=True, capture_output=True, text=True, timeout=60)


def queued(ns: str, shared: bool = False) -> str:
    """What the queues did: for each socket that sent (or the one shared queue), datagrams passed and dropped."""
    shown = sh("ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", "lo", check=False).stdout
    used = [(int(m[1]), int(m[2])) for m in re.finditer(r"qdisc (?:bfifo|tbf) .*?\n\s*Sent \d+ bytes (\d+) pkt "
                                                         r"\(dropped (\d+)", shown) if int(m[1]) or int(m[2])]
    if shared:
        return f"the queue passed {sum(u[0] for u in used)} datagrams and dropped {sum(u[1] for u in used)}"
    return (f"{len(used)} sockets' queues passed {sum(u[0] for u in used)} datagrams and dropped "
            f"{sum(u[1] for u in used)} (" + ", ".join(f"{p} passed, {d} dropped" for p, d in used) + ")")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kbps", type=float, help="UDP allowed per destination port, kbit/s")
    parser.add_argument("--loss", type=float, help="percent of UDP datagrams dropped at random")
    parser.add_argument("--outage", metavar="AT:SECONDS", help="all UDP dropped for SECONDS from AT s after the start")
    parser.add_argument("--queue", type=float, metavar="KBPS",
                        help="each socket's UDP beyond KBPS kbit/s waits in a buffer of its own")
    parser.add_argument("--buffer-ms", type=float, default=1000.0,
                        help="with --queue, the buffer's depth in ms at that rate (default 1000)")
    parser.add_argument("--shared", action="store_true",
                        help="with --queue, one queue for all traffic both ways (a half-duplex link)")
    parser.add_argument("--timeout", type=float, default=600, help="stop the command after this many s")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run inside")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    outage = None
    if args.outage is not None:
        try:
            outage = tuple(float(x) for x in args.outage.split(":"))
        except ValueError:
            outage = ()
        if len(outage) != 2 or outage[0] < 0 or outage[1] <= 0:
            parser.error(f"--outage {args.outage!r}: AT:SECONDS, e.g. 12:4 (all UDP dropped from 12 s to 16 s)")
    if args.kbps is None and args.loss is None and outage is None and args.queue is None:
        parser.error("say what the link does: --kbps, --loss, --outage, --queue or a mix")
    if args.queue is not None and (args.queue <= 0 or args.buffer_ms <= 0):
        parser.error("--queue and --buffer-ms must be above 0")
    if args.shared and args.queue is None:
        parser.error("--shared says how --queue queues: give --queue KBPS too")
    if args.kbps is not None and args.kbps <= 0:
        parser.error("--kbps must be above 0")
    if args.loss is not None and not 0 < args.loss < 100:
        parser.error("--loss is a percentage between 0 and 100")
    ns = f"cspol{uuid.uuid4().hex[:6]}"
    rules = []
    if args.loss is not None:
        rules.append(["-m", "statistic", "--mode", "random", "--probability", f"{args.loss / 100:.4f}"])
    if args.kbps is not None:
        rate = max(1, round(args.kbps * 1000 / 8))              # hashlimit counts bytes
        rules.append(["-m", "hashlimit", "--hashlimit-name", ns, "--hashlimit-mode", "dstport",
                      "--hashlimit-above", f"{rate}b/s", "--hashlimit-burst", f"{rate}b"])
    link = " and ".join(([f"{args.loss:g} % lost"] if args.loss is not None else [])
                        + ([f"{args.kbps:g} kbit/s per port"] if args.kbps is not None else [])
                        + ([f"nothing from {outage[0]:g} s to {sum(outage):g} s"] if outage else [])
                        + ([f"{args.queue:g} kbit/s {'shared' if args.shared else 'per socket'}, "
                            f"{args.buffer_ms:g} ms queued at most"]
                           if args.queue is not None else []))

    def drop(how: str, *rule: str, check: bool = True) -> None:
        """Adds (-A, -I) or removes (-D) a rule that drops the namespace's UDP that `rule` matches."""
        sh("ip", "netns", "exec", ns, "iptables", how, "INPUT", "-p", "udp", *rule, "-j", "DROP", check=check)

    timers = [threading.Timer(outage[0], drop, ["-I"], {"check": False}),
              threading.Timer(sum(outage), drop, ["-D"], {"check": False})] if outage else []
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        if args.queue is not None:
            queue(ns, args.queue, args.buffer_ms, args.shared)
        for rule in rules:
            drop("-A", *rule)
        for timer in timers:
            timer.start()
        try:
            code = subprocess.run(["ip", "netns", "exec", ns, *command], timeout=args.timeout,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            print(f"policed_link: the command ran past {args.timeout:g} s and was stopped", file=sys.stderr)
            code = 124
        finally:
            for timer in timers:
                timer.cancel()
        counters = sh("ip", "netns", "exec", ns, "iptables", "-L", "INPUT", "-v", "-n", "-x", check=False).stdout
        dropped = [line.split()[:2] for line in counters.splitlines() if "DROP" in line]
        if dropped or outage:
            print(f"policed_link: {link}; {'besides the outage, ' if outage else ''}"
                  f"dropped {sum(int(d[0]) for d in dropped)} datagrams, "
                  f"{sum(int(d[1]) for d in dropped)} bytes")
        if args.queue is not None:
            print(f"policed_link: {link}; {queued(ns, args.shared)}")
        return code
    finally:
        sh("ip", "netns", "delete", ns, check=False)


if __name__ == "__main__":
    sys.exit(main())
