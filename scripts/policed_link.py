"""Run a command on a bad link: a network namespace of its own (its loopback only) where iptables drops
each destination port's UDP beyond KBPS (hashlimit; a burst of a second's worth passes), as a narrow
uplink does, and/or LOSS % of all UDP datagrams at random (the statistic match), as a poor radio link
does, and/or every UDP datagram for SECONDS from AT s after the command started (`--outage AT:SECONDS`), as
a train's tunnel does. Everything the command starts, and the calls between them, stay inside it; the namespace is removed
after. Needs root, `ip` and iptables (with the hashlimit and statistic matches).

    python scripts/policed_link.py --kbps 40 -- python -m callsynth.cli demo --budget auto ...
    python scripts/policed_link.py --loss 15 -- python -m callsynth.cli demo --two-way ...
    python scripts/policed_link.py --outage 12:4 -- python -m callsynth.cli demo --two-way ...

Prints the link's counters (datagrams and bytes dropped) when the command ends; exits with its status."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import uuid


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kbps", type=float, help="UDP allowed per destination port, kbit/s")
    parser.add_argument("--loss", type=float, help="percent of UDP datagrams dropped at random")
    parser.add_argument("--outage", metavar="AT:SECONDS", help="all UDP dropped for SECONDS from AT s after the start")
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
    if args.kbps is None and args.loss is None and outage is None:
        parser.error("say what the link does: --kbps, --loss, --outage or a mix")
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
                        + ([f"nothing from {outage[0]:g} s to {sum(outage):g} s"] if outage else []))

    def drop(how: str, *rule: str, check: bool = True) -> None:
        """Adds (-A, -I) or removes (-D) a rule that drops the namespace's UDP that `rule` matches."""
        sh("ip", "netns", "exec", ns, "iptables", how, "INPUT", "-p", "udp", *rule, "-j", "DROP", check=check)

    timers = [threading.Timer(outage[0], drop, ["-I"], {"check": False}),
              threading.Timer(sum(outage), drop, ["-D"], {"check": False})] if outage else []
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
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
            print(f"policed_link: {link}; {'besides the outage, ' if outage else ''}dropped {sum(int(d[0]) for d in dropped)} datagrams, "
                  f"{sum(int(d[1]) for d in dropped)} bytes")
        return code
    finally:
        sh("ip", "netns", "delete", ns, check=False)


if __name__ == "__main__":
    sys.exit(main())
