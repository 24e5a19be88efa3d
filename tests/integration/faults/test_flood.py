"""Fault: a handshake flood from another namespace, from one source and from
spoofed sources, as fast as one process sends. The tunnel must keep working
(pings answered, a TCP flow at most a little slower) and the server must
still stop at once on SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from kcpvpn_lab import iperf
from kcpvpn_lab.topology import SERVER_ADDR
from kcpvpn_lab.vpn import (
    daemon_status,
    ping_in_background,
    ping_losses,
    start_client,
    start_server,
    wait_exit,
)

from .conftest import SERVER_FLAGS, SERVER_IP

pytestmark = pytest.mark.netns

SECONDS = 8


def _iperf(topo, seconds: int) -> float:
    iperf.serve(topo.server, SERVER_IP)
    r = topo.client(1).run(
        ["iperf3", "-c", SERVER_IP, "-t", str(seconds), "-b", "100M", "-J"],
        timeout=seconds + 30,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return iperf.received_mbit(iperf.report(r.stdout))


def _flood(topo, spoof: bool):
    attacker = topo.client(2)
    args = [
        sys.executable, "-m", "kcpvpn_lab.flood", "--ifname", "eth0",
        "--dst", str(SERVER_ADDR), "--dst-mac", topo.server.mac("eth0"),
        "--src", str(attacker.address), "--src-mac", attacker.mac("eth0"),
        "--seconds", str(SECONDS + 2),
    ]  # fmt: skip
    if spoof:
        args.append("--spoof")
    return attacker.popen(args, name="flood")


@pytest.mark.parametrize("spoof", [False, True], ids=["one-source", "spoofed-sources"])
def test_a_handshake_flood_leaves_the_tunnel_working(make_topology, spoof):
    topo = make_topology(clients=2, wan=False)
    if spoof:
        for key in ("all", "default", "eth0"):
            topo.server.sysctl(f"net.ipv4.conf.{key}.rp_filter", 0)
    srv = start_server(topo.server, *SERVER_FLAGS)
    start_client(topo.client(1), topo.server)
    unloaded = _iperf(topo, SECONDS)
    flood = _flood(topo, spoof)
    time.sleep(1)
    pinger = ping_in_background(topo.client(1), SERVER_IP, count=SECONDS * 10, interval=0.1)
    loaded = _iperf(topo, SECONDS - 2)
    sent, lost = ping_losses(pinger, timeout=SECONDS + 20)
    flood.wait(timeout=30)
    rate = json.loads(flood.log().strip().splitlines()[-1])["rate"]
    e = daemon_status(srv)["endpoint"]
    print(
        f"flood {'spoofed' if spoof else 'one source'}: {rate} message 1s/s; pings lost "
        f"{lost}/{sent}; flow {loaded:.0f} of {unloaded:.0f} Mbit/s; handshakes read "
        f"{e['handshake_failures']}, rate-limited {e['handshake_rate_limited']}, "
        f"cookies {e['cookies_sent']}"
    )
    assert lost <= sent // 100, (lost, sent)
    assert loaded >= 0.8 * unloaded, (loaded, unloaded)
    # What the flood cost: per-source limit or cookies, not a handshake each.
    assert e["handshake_failures"] < rate * SECONDS / 10, e
    # And the server stops at once even under a flood.
    flood = _flood(topo, spoof)
    time.sleep(1)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    assert wait_exit(srv, timeout=10) == 0
    assert time.monotonic() - t0 < 2, f"stopped after {time.monotonic() - t0:.1f} s"
