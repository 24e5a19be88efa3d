"""Claim: a bulk TCP upload through the tunnel does not make a ping that
shares the tunnel wait behind it (docs/architecture.md, "Latency under
load").

The link: 40 ms RTT, 20 Mbit/s, a drop-tail queue of 500 kB (200 ms at that
rate, as on many home routers and VPS uplinks), 2% loss each way. One bulk
cubic upload fills the tunnel while pings go every 100 ms over the same
tunnel. With the tunnel's flow queueing (the default) the ping is a sparse
flow served first, the upload's own queue is held near CoDel's target by ECN
marks, and the tunnel's pacing keeps the path's queue short; with
`--no-flow-queueing` (wave 1's single FIFO) the ping waits behind everything
the upload queued. The two runs go one after the other on the same kind of
link; only figures from this run are compared, and the margin is wide (the
FIFO's median is several times the RTT), so a busy machine does not decide
the outcome.
"""

from __future__ import annotations

import pytest

from kcpvpn_lab.bench.measure import ping_under_load
from kcpvpn_lab.vpn import sessions_of, status_when

from .conftest import open_tun

pytestmark = pytest.mark.netns

LINK = {"delay_ms": 20, "rate_mbit": 20, "queue_bytes": 500_000, "loss": 0.02}
RTT_MS = 40
SECONDS = 10


def _loaded(make_topology, flags: tuple[str, ...], seed: int) -> tuple[dict, dict]:
    topo = make_topology(clients=1, impair=LINK, seed=seed)
    tun = open_tun(topo, flags, flags)
    r = ping_under_load(topo.client(1), topo.server, tun.server_ip, SECONDS, "cubic", warmup=3.0)
    client = sessions_of(status_when(tun.client_sock, sessions_of))[0]
    return r, client


def test_a_ping_does_not_wait_behind_a_bulk_upload(make_topology):
    fq, fq_status = _loaded(make_topology, (), seed=21)
    fifo, _ = _loaded(make_topology, ("--no-flow-queueing",), seed=21)

    for name, r in (("flow queueing", fq), ("fifo", fifo)):
        assert r["ping_sent"] and r["ping_p50"] is not None, f"{name}: no ping answered: {r}"
        # The upload really loaded the tunnel (most of the 20 Mbit/s).
        assert r["mbit_s"] > 8, f"{name}: the bulk upload moved only {r['mbit_s']:.1f} Mbit/s"
    # Every ping answered: the scheduler drops only the upload's packets.
    assert fq["ping_received"] == fq["ping_sent"], f"pings lost under load: {fq}"
    # Without flow queueing the ping waits behind the upload's queue ...
    assert fifo["ping_p50"] > 2 * RTT_MS, f"the FIFO reference did not queue: {fifo}"
    # ... with it, even the slowest pings stay well below that.
    assert fq["ping_p99"] < fifo["ping_p50"] / 2, (
        f"ping p50/p99 {fq['ping_p50']:.0f}/{fq['ping_p99']:.0f} ms under load with flow "
        f"queueing vs {fifo['ping_p50']:.0f}/{fifo['ping_p99']:.0f} ms without"
    )
    # The scheduler's signal is what slowed the upload: CE marks (cubic in
    # the lab negotiates ECN) or CoDel drops, counted in status.
    signals = fq_status["ecn_marks"] + fq_status["codel_drops"]
    assert signals > 0, {k: fq_status[k] for k in ("ecn_marks", "codel_drops", "overflow_drops")}
    # Each ping left behind a padding message (docs/protocol.md, 3.5), so
    # the peer could hand it out even when the upload's segment before it
    # was lost.
    assert fq_status["sparse_markers"] > 0, fq_status
    # The pacing trim (docs/architecture.md) is shown, and held above what
    # the path's 2% loss (as the FEC's smoothed estimate reads it) explains.
    trim = fq_status["kcp"]["cc_trim_pct"]
    assert 80 <= trim <= 100, fq_status["kcp"]
