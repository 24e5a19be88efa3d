"""Claim: with 10% random loss each way, a flow of 1,000 UDP datagrams through
the tunnel arrives complete and in order (each direction). The same flow on
the bare link, in the same run, loses about 10%: the proof that the link
really was that bad, and that the tunnel repaired it. The same over fake
TCP (`--tcp`): its segments are lost like datagrams, and KCP repairs them
the same way."""

from __future__ import annotations

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import sessions_of, status_when

from .conftest import open_tun

pytestmark = pytest.mark.netns

LOSS = 0.10
COUNT = 1000


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_1000_datagrams_complete_and_in_order_at_10_percent_loss(
    make_topology, direction, transport
):
    topo = make_topology(clients=1, seed=4)
    flags = ("--tcp",) if transport == "tcp" else ()
    tun = open_tun(topo, flags, flags)  # connected while the link is clean; the loss starts now
    topo.impair({"loss": LOSS})
    c, s = topo.client(1), topo.server
    forward = direction == "client-to-server"
    src, dst = (c, s) if forward else (s, c)
    dst_ip = tun.server_ip if forward else tun.client_ip

    # Reference: the bare underlay (no tunnel) through the same lossy emulator.
    bare = probes.udp_flow(src, dst, count=COUNT, size=200, interval=0.001)
    # 10% of 1000: ~100 lost, σ ≈ 9.5; 50 is > 5 σ below.
    assert bare.lost > 50, f"the emulator should drop about 10%: {bare}"

    stats0 = topo.emulator_stats()
    flow = probes.udp_flow(
        src, dst, dst_ip=dst_ip, count=COUNT, size=200, interval=0.001, idle_timeout=3.0
    )
    stats1 = topo.emulator_stats()
    assert flow.complete, f"lost {flow.lost} of {COUNT} through the tunnel: {flow}"
    assert flow.in_order, f"{flow.duplicates} duplicates, {flow.late} late: {flow}"
    assert flow.order == list(range(COUNT))

    # The tunnel's datagrams really were dropped on the way, both ways.
    for d in ("to_server", "to_client"):
        assert stats1[d]["dropped_loss"] > stats0[d]["dropped_loss"], d
    # ... and were repaired: KCP retransmissions or FEC recoveries, on the receiving side.
    rx_sock = tun.server_sock if forward else tun.client_sock
    tx_sock = tun.client_sock if forward else tun.server_sock
    rx = sessions_of(status_when(rx_sock, sessions_of))[0]
    tx = sessions_of(status_when(tx_sock, sessions_of))[0]
    resent = tx["kcp"]["retransmits"] + tx["kcp"]["fast_retransmits"]
    repaired = rx["fec_recovered"] + resent
    assert repaired > 0, (rx, tx)
    # Of the segments resent, those the receiver already had are counted
    # apart, once per segment: never more than the retransmissions.
    assert 0 <= tx["kcp"]["unneeded_retransmits"] <= resent, (rx, tx)
