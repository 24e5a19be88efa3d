"""Fault: datagrams with sources no peer can have (the subnet's broadcast
address, the server's own address, port 0) never stop the server. Before,
one message 1 from the subnet's broadcast address (rp_filter 0) ended it
with "data path failed: Permission denied (os error 13)"."""

from __future__ import annotations

import time

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.topology import SERVER_ADDR, WAN_NET
from kcpvpn_lab.vpn import daemon_status, ping, start_client, start_server

from .conftest import PORT, SERVER_FLAGS, SERVER_IP

pytestmark = pytest.mark.netns


def _message_1_of_another_secret() -> bytes:
    from kcpvpn._engine import testing

    psk = testing.stretch_secret(b"not the lab's secret")
    payload = {"mtu": 1500, "cipher": "aes"}
    return testing.HandshakeInitiator(psk, payload, 0x1234, int(time.time() * 1000)).message


def test_forged_sources_are_never_answered_and_stop_nothing(topo):
    srv_host, c1 = topo.server, topo.client(1)
    for key in ("all", "default", "eth0"):
        srv_host.sysctl(f"net.ipv4.conf.{key}.rp_filter", 0)
    srv = start_server(srv_host, *SERVER_FLAGS)
    cli = start_client(c1, srv_host)
    ping(c1, SERVER_IP)
    before = daemon_status(srv)["endpoint"]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    m1 = _message_1_of_another_secret()
    sources = [
        (str(WAN_NET.broadcast_address), PORT),  # the subnet's broadcast
        (str(SERVER_ADDR), PORT),  # the server itself
        (str(c1.address), 0),  # port 0
    ]
    with probes._l2_socket(c1, "eth0") as l2:
        for src, sport in sources:
            for _ in range(5):
                frame = (
                    Ether(src=c1.mac("eth0"), dst=srv_host.mac("eth0"))
                    / IP(src=src, dst=str(SERVER_ADDR))
                    / UDP(sport=sport, dport=PORT)
                    / m1
                )
                l2.send(bytes(frame))
                time.sleep(0.01)
    time.sleep(0.5)
    assert srv.alive(), srv.log()
    after = daemon_status(srv)["endpoint"]
    # None was answered (no hint, no send error), and none cost a handshake.
    # (The kernel itself drops the ones claiming the server's own address.)
    assert after["unanswerable_sources"] - before["unanswerable_sources"] == 10, after
    assert after["handshake_failures"] == before["handshake_failures"]
    assert after["hints_sent"] == before["hints_sent"]
    assert after["send_errors"] == before["send_errors"], after
    # The tunnel is untouched.
    assert cli.alive()
    ping(c1, SERVER_IP)
