"""Fault: loss that flaps between 0 and 30% every few seconds while a ping
and a TCP flow run. Nothing may end that shouldn't, nothing may leak.
Runs KCPVPN_FLAP_SECONDS (default 60; the issue's figure is from 600)."""

from __future__ import annotations

import os
import random
import time

import pytest

from kcpvpn_lab import iperf
from kcpvpn_lab.vpn import (
    connected_since,
    daemon_status,
    ping_in_background,
    ping_losses,
    start_client,
    start_server,
)

from .conftest import SERVER_FLAGS, SERVER_IP, kvs, open_fds, rss_kib

pytestmark = pytest.mark.netns

SECONDS = int(os.environ.get("KCPVPN_FLAP_SECONDS", "60"))


# The suite's 300 s limit would end a long run (KCPVPN_FLAP_SECONDS=600) halfway.
@pytest.mark.timeout(SECONDS + 180)
def test_flapping_loss_ends_nothing_and_leaks_nothing(make_topology):
    topo = make_topology(clients=1, impair={"delay_ms": 20})
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server)
    since = connected_since(cli)
    iperf.serve(topo.server, SERVER_IP)
    fds0, rss0 = open_fds(srv.pid), rss_kib(srv.pid)
    flow = topo.client(1).popen(
        ["iperf3", "-c", SERVER_IP, "-t", str(SECONDS), "-b", "20M", "-J"], name="iperf3-c"
    )
    pinger = ping_in_background(topo.client(1), SERVER_IP, count=SECONDS * 5, interval=0.2)
    rng = random.Random(1)
    end = time.monotonic() + SECONDS
    levels = []
    while time.monotonic() < end:
        loss = rng.choice([0.0, 0.05, 0.1, 0.2, 0.3])
        levels.append(loss)
        topo.impair({"delay_ms": 20, "loss": loss})
        time.sleep(min(5.0, max(0.0, end - time.monotonic())))
    topo.impair({"delay_ms": 20})
    sent, lost = ping_losses(pinger, timeout=SECONDS + 30)
    assert flow.wait(timeout=60) == 0, flow.log()
    mbit = iperf.received_mbit(iperf.report(flow.log()))
    # The session never ended: no reconnection on either side.
    assert connected_since(cli) == since, cli.log()
    assert "session ended" not in cli.log() and "disconnected" not in srv.log()
    assert lost <= sent // 100, f"{lost} of {sent} pings lost over loss levels {levels}"
    assert mbit > 5, f"the flow carried {mbit:.1f} Mbit/s"
    # Nothing leaked.
    assert kvs(topo.server) == ["kvs0"]
    assert open_fds(srv.pid) == fds0
    assert len(daemon_status(srv)["clients"]) == 1
    print(
        f"flapping {SECONDS}s: {lost}/{sent} pings lost, flow {mbit:.1f} Mbit/s, "
        f"server RSS {rss0} -> {rss_kib(srv.pid)} KiB"
    )
