"""A call between two peers that cannot reach each other, relayed by a real TURN server (coturn).

Three network namespaces made here and removed after: the caller's (10.77.1.2), the callee's (10.77.2.2)
and, between them, one that holds the signalling server and coturn on both sides (10.77.1.1, 10.77.2.1)
and forwards nothing: no packet goes from one peer's network to the other's except through the relay.
Needs root, `ip` and coturn's `turnserver` (.ci/run installs coturn when it can); skipped, saying which is
missing, otherwise."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from callsynth.call_key import CallKey
from callsynth.demo import stop_processes
from callsynth.split import data_root

VAL_CLIP = data_root() / "video/pcavs/00067.mp4"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if shutil.which("turnserver") is None:
        return "coturn's turnserver is not installed (apt-get install coturn)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


class Namespaces:
    """caller ⟷ middle ⟷ callee, the middle one forwarding nothing."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.caller, self.middle, self.callee = (f"cs{tag}{n}" for n in ("a", "m", "b"))
        self.made = []

    def __enter__(self):
        for ns in (self.caller, self.middle, self.callee):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for side, ns, net in (("a", self.caller, 1), ("b", self.callee, 2)):
            outer, inner = f"{self.middle[:-1]}{side}0", f"{self.middle[:-1]}{side}1"
            sh("ip", "link", "add", outer, "netns", self.middle, "type", "veth", "peer", "name", inner,
               "netns", ns)
            sh("ip", "-n", self.middle, "addr", "add", f"10.77.{net}.1/24", "dev", outer)
            sh("ip", "-n", ns, "addr", "add", f"10.77.{net}.2/24", "dev", inner)
            sh("ip", "-n", self.middle, "link", "set", outer, "up")
            sh("ip", "-n", ns, "link", "set", inner, "up")
        sh("ip", "netns", "exec", self.middle, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        return self

    def __exit__(self, *exc):
        for ns in self.made:
            sh("ip", "netns", "delete", ns, check=False)

    def run(self, ns, args, log):
        env = dict(os.environ, PYTHONPATH=os.getcwd(), CALLSYNTH_DATA=str(data_root()))
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_a_call_between_networks_that_cannot_reach_each_other_goes_through_turn(tmp_path):
    key = CallKey.new().text
    cli = [sys.executable, "-m", "callsynth.cli"]
    processes = []
    with Namespaces() as nets:
        # no direct path: the caller has a route to the middle, none to the callee
        assert sh("ip", "-n", nets.caller, "route", "get", "10.77.1.1", check=False).returncode == 0
        no_route = sh("ip", "-n", nets.caller, "route", "get", "10.77.2.2", check=False)
        assert no_route.returncode != 0 and "unreachable" in no_route.stderr
        try:
            turn_log = open(tmp_path / "turn.log", "w")
            processes.append(nets.run(nets.middle, [
                "turnserver", "-n", "--listening-ip=10.77.1.1", "--listening-ip=10.77.2.1",
                "--relay-ip=10.77.1.1", "--listening-port=3478", "--lt-cred-mech", "--user=cs:secret",
                "--realm=callsynth", "--no-tls", "--no-dtls", "--no-cli", "--log-file=stdout", "--verbose",
                "--min-port=49160", "--max-port=49200"], turn_log))
            processes.append(nets.run(nets.middle, cli + ["signal", "--host", "0.0.0.0", "--port", "8765"],
                                      open(tmp_path / "signal.log", "w")))
            time.sleep(2.0)
            receiver = nets.run(nets.callee, cli + [
                "receive", "--signal", "ws://10.77.2.1:8765", "--room", "turn", "--key", key,
                "--ice-host", "10.77.2.2", "--ice-server", "turn:cs:secret@10.77.2.1:3478",
                "--model", "warp", "--stats", str(tmp_path / "rx.json"), "--duration", "90",
                "--rejoin-wait", "10"], open(tmp_path / "receiver.log", "w"))
            processes.append(receiver)
            sender = nets.run(nets.caller, cli + [
                "send", "--signal", "ws://10.77.1.1:8765", "--room", "turn", "--key", key,
                "--ice-host", "10.77.1.2", "--ice-server", "turn:cs:secret@10.77.1.1:3478",
                "--video", str(VAL_CLIP), "--max-frames", "60", "--audio", "none",
                "--stats", str(tmp_path / "tx.json")], open(tmp_path / "sender.log", "w"))
            processes.append(sender)
            assert sender.wait(timeout=120) == 0, (tmp_path / "sender.log").read_text()[-2000:]
            assert receiver.wait(timeout=60) == 0, (tmp_path / "receiver.log").read_text()[-2000:]
        finally:
            stop_processes(processes)
    sent = json.loads((tmp_path / "tx.json").read_text())
    received = json.loads((tmp_path / "rx.json").read_text())
    assert sent["packets_sent"] >= 25 and received["features"]["packets"] == sent["packets_sent"]
    assert received["still_cached"] and received["frames_shown"] > 0
    # the relay carried it: coturn allocated relays and passed the peers' traffic
    log = (tmp_path / "turn.log").read_text()
    assert log.count("ALLOCATE processed, success") == 2          # one relay for each peer
    assert "CHANNEL_BIND processed, success" in log
