"""Run a command on a link that polices UDP to a rate, as a narrow uplink does: a network namespace of
its own (its loopback only) where iptables drops each destination port's UDP beyond KBPS (hashlimit; a
burst of a second's worth passes). Everything the command starts, and the calls between them, stay inside
it; the namespace is removed after. Needs root, `ip` and iptables with the hashlimit match.

    python scripts/policed_link.py --kbps 40 -- python -m callsynth.cli demo --budget auto ...

Prints the policer's counters (packets and bytes dropped) when the command ends; exits with its status."""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kbps", type=float, required=True, help="UDP allowed per destination port, kbit/s")
    parser.add_argument("--timeout", type=float, default=600, help="stop the command after this many s")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run inside")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    ns = f"cspol{uuid.uuid4().hex[:6]}"
    rate = max(1, round(args.kbps * 1000 / 8))              # hashlimit counts bytes
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-p", "udp", "-m", "hashlimit",
           "--hashlimit-name", ns, "--hashlimit-mode", "dstport", "--hashlimit-above", f"{rate}b/s",
           "--hashlimit-burst", f"{rate}b", "-j", "DROP")
        try:
            code = subprocess.run(["ip", "netns", "exec", ns, *command], timeout=args.timeout,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            print(f"policed_link: the command ran past {args.timeout:g} s and was stopped", file=sys.stderr)
            code = 124
        counters = sh("ip", "netns", "exec", ns, "iptables", "-L", "INPUT", "-v", "-n", "-x", check=False).stdout
        dropped = [line.split()[:2] for line in counters.splitlines() if "DROP" in line]
        if dropped:
            print(f"policed_link: {args.kbps:g} kbit/s per port; dropped {dropped[0][0]} datagrams, "
                  f"{dropped[0][1]} bytes")
        return code
    finally:
        sh("ip", "netns", "delete", ns, check=False)


if __name__ == "__main__":
    sys.exit(main())
