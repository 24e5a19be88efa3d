"""Claim: with `--unordered` on the receiving side, at 10% loss each way a UDP
flow through the tunnel still arrives complete and without duplicates, but
packets that arrived beyond a loss are handed over at once (the engine counts
them as early deliveries) instead of waiting for the retransmission, so some
datagrams arrive out of order. With the default (`--ordered`) none do; that
side is proved by test_loss_recovery's in-order check."""

from __future__ import annotations

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import sessions_of, status_when

from .conftest import open_tun

pytestmark = pytest.mark.netns

COUNT = 2000


def test_unordered_delivers_past_a_loss_complete_and_once(make_topology):
    topo = make_topology(clients=1, impair={"delay_ms": 10}, seed=11)
    tun = open_tun(topo, server_flags=("--unordered",))
    topo.impair({"delay_ms": 10, "loss": 0.10})
    flow = probes.udp_flow(
        topo.client(1),
        topo.server,
        dst_ip=tun.server_ip,
        count=COUNT,
        size=200,
        interval=0.001,
        idle_timeout=3.0,
    )
    assert flow.complete, f"lost {flow.lost} of {COUNT}: {flow}"
    assert flow.duplicates == 0, flow
    server = sessions_of(status_when(tun.server_sock, sessions_of))[0]
    early = server["kcp"]["early_deliveries"]
    assert early > 0, server["kcp"]
    # Each early delivery overtook a packet still missing.
    assert flow.late > 0, flow
