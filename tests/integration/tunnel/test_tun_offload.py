"""Issue "TUN offload": TUN interfaces opened with IFF_VNET_HDR hand the
daemon TSO super-packets (cut into packets before the tunnel) and take merged
ones; --no-tun-offload keeps the packet-by-packet path. Either end may run
either path: the wire does not change. Real daemons, devices and iperf3."""

from __future__ import annotations

import hashlib
import io

import pytest
from rich.console import Console

from kcpvpn.status_view import render
from kcpvpn_lab import iperf
from kcpvpn_lab.vpn import client_address, read_status, start_client, start_server, status_path

pytestmark = pytest.mark.netns

SERVER_FLAGS = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")
BLOB = 8 * 1024 * 1024


def _iperf(topo, reverse: bool, seconds: int = 2) -> dict:
    iperf.serve(topo.server, "192.168.88.1")
    args = ["iperf3", "-c", "192.168.88.1", "-t", str(seconds), "-J"]
    if reverse:
        args.append("-R")
    r = topo.client(1).run(args, timeout=40, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return iperf.report(r.stdout)["end"]


# Sends BLOB pseudo-random bytes over one TCP connection and prints the
# receiver's SHA-256 of what arrived: merged and cut segments must carry the
# very bytes sent (the kernel trusts checksums we leave open).
_RECEIVER = """
import hashlib, socket, sys
s = socket.create_server((sys.argv[1], 5300)); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while (b := c.recv(1 << 20)):
    h.update(b); n += len(b)
print(n, h.hexdigest())
"""
_SENDER = """
import random, socket, sys, time
data = random.Random(7).randbytes(int(sys.argv[2]))
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], 5300), timeout=30); break
    except OSError:
        time.sleep(0.1)
c.sendall(data); c.close()
"""


def _blob_sha() -> str:
    import random

    return hashlib.sha256(random.Random(7).randbytes(BLOB)).hexdigest()


def _transfer(sender, receiver, address: str) -> str:
    rx = receiver.popen(["python3", "-c", _RECEIVER, address], name="blob-rx")
    sender.run(["python3", "-c", _SENDER, address, str(BLOB)], timeout=60)
    assert rx.wait(timeout=60) == 0, rx.log()
    n, digest = rx.log().split()[-2:]
    assert int(n) == BLOB, rx.log()
    return digest


def _carries_tcp_intact_both_ways(topo, ip: str) -> None:
    """iperf3 each way, then a checksummed blob each way."""
    for reverse in (False, True):
        res = _iperf(topo, reverse)
        assert res["sum_received"]["bytes"] > 1_000_000, res["sum_received"]
    want = _blob_sha()
    assert _transfer(topo.client(1), topo.server, "192.168.88.1") == want
    assert _transfer(topo.server, topo.client(1), ip) == want


def test_offload_is_on_and_carries_tcp_intact_both_ways(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server)
    _carries_tcp_intact_both_ways(topo, client_address(cli))

    cdoc = read_status(status_path(cli))
    sdoc = read_status(status_path(srv))
    assert cdoc["tun_offload"] is True, cdoc
    assert sdoc["tun_offload"] is True and sdoc["clients"][0]["tun_offload"] is True, sdoc
    for doc in (cdoc, sdoc):
        ep = doc["endpoint"]
        sess = doc["sessions"][0] if "sessions" in doc else doc["clients"][0]
        assert sess["offload"] is True, sess
        assert ep["tun_offload_interfaces"] == ep["tun_interfaces"] == 1, ep
        # Both sides sent bulk TCP (TSO reads) and received it (merged writes).
        assert ep["tun_gso_reads"] > 0 and ep["tun_gso_segments"] > ep["tun_gso_reads"], ep
        assert ep["tun_merged_writes"] > 0, ep
        assert ep["tun_merged_segments"] > ep["tun_merged_writes"], ep
        assert ep["tun_bad_reads"] == 0, ep
    assert isinstance(cdoc["tun_queue_drops"], int), cdoc
    assert isinstance(sdoc["clients"][0]["tun_queue_drops"], int), sdoc
    out = io.StringIO()
    render(cdoc, "client.sock", Console(file=out, width=100))
    assert "interface offload (TSO/merged) · queue drops" in out.getvalue(), out.getvalue()


def test_no_tun_offload_reads_packet_by_packet(topo):
    # The server offloads, the client does not: the wire is the same.
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--no-tun-offload")
    _carries_tcp_intact_both_ways(topo, client_address(cli))

    cdoc = read_status(status_path(cli))
    assert cdoc["tun_offload"] is False, cdoc
    assert cdoc["sessions"][0]["offload"] is False
    ep = cdoc["endpoint"]
    assert ep["tun_offload_interfaces"] == 0 and ep["tun_interfaces"] == 1, ep
    for k in ("tun_gso_reads", "tun_merged_writes", "tun_bad_reads"):
        assert ep[k] == 0, ep
    # The device itself has no offloads a packet-by-packet reader can't take.
    feats = topo.client(1).run(["ethtool", "-k", "kvc0"], check=False).stdout
    if feats:
        assert "tcp-segmentation-offload: off" in feats, feats
    sdoc = read_status(status_path(srv))
    assert sdoc["endpoint"]["tun_offload_interfaces"] == 1, sdoc["endpoint"]
    out = io.StringIO()
    render(cdoc, "client.sock", Console(file=out, width=100))
    assert "interface packet by packet" in out.getvalue(), out.getvalue()
