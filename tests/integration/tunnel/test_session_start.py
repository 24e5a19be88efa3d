"""How a session starts, with real daemons: nothing the server sends is lost
before the client has the session, both sides agree on one UDP MTU, and a
path that drops large datagrams is found and reported (issue "The endpoint
as a sans-IO state machine", its three bugs)."""

from __future__ import annotations

import statistics
import subprocess
import time

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import (
    daemon_status,
    kcpvpn_argv,
    ping,
    start_client,
    start_server,
    status_path,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_FLAGS = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")


def _session(proc) -> dict:
    doc = daemon_status(proc)
    if doc["mode"] == "server":
        return doc["clients"][0]
    return doc["sessions"][0]


def test_a_new_session_on_a_clean_link_loses_nothing(topo):
    """Before: the server sent at once (IPv6 router solicitations, DAD) to a
    client that had not installed the session yet; the client dropped those
    as unknown, reported them as loss, and parity ran at its maximum on a
    clean, idle link; the first ping took ~115 ms."""
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server)
    first = probes.ping(topo.client(1), "192.168.88.1", count=1, wait=3)
    assert first.rtts_ms, first.output
    later = probes.ping(topo.client(1), "192.168.88.1", count=10, interval=0.05)
    assert len(later.rtts_ms) == 10, later.output
    # The first ping is as fast as the rest (within scheduling noise; the
    # bug cost a whole retransmission timeout).
    assert first.rtts_ms[0] < max(20.0, 5 * statistics.median(later.rtts_ms)), (first, later)
    # Let loss reports flow, then stay idle.
    time.sleep(1.5)
    c_doc, s_sess = daemon_status(cli), _session(srv)
    assert c_doc["endpoint"]["unknown_session"] == 0, c_doc["endpoint"]
    assert daemon_status(srv)["endpoint"]["unknown_session"] == 0
    c_sess = c_doc["sessions"][0]
    for side, sess in (("server", s_sess), ("client", c_sess)):
        assert sess["peer_expected"] > 0, f"{side}: no loss report arrived"
        assert sess["peer_lost"] == 0, f"{side} was told of loss on a clean link: {sess}"
    # What an operator reads: no loss on a clean link (before, the status
    # showed the estimate's cautious prior, 7-8%, as "loss").
    for proc in (srv, cli):
        argv = [*kcpvpn_argv(), "status", "--socket", status_path(proc)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
        assert "loss 0.0%" in out, out
    # Idle: keepalives only, no parity.
    parity = (s_sess["parity_out"], c_sess["parity_out"])
    time.sleep(3)
    assert (_session(srv)["parity_out"], _session(cli)["parity_out"]) == parity


def test_the_smaller_udp_mtu_is_agreed(topo):
    """Before: a client whose --udp-mtu was above the server's sent datagrams
    the server cut and could not authenticate: every large packet was lost
    (2800-byte pings: 0 of 10 delivered, 10 authentication failures) and the
    session died as "link dead", with no counter saying why."""
    jumbo = ("--vni-mtu", "3000")
    srv = start_server(topo.server, *SERVER_FLAGS, "--udp-mtu", "1200", *jumbo)
    cli = start_client(topo.client(1), topo.server, "--udp-mtu", "4000", *jumbo)
    # Large packets both ways: each takes several of the largest segments.
    ping(topo.client(1), "192.168.88.1", count=10, size=2800, interval=0.05)
    ping(topo.server, "192.168.88.2", count=10, size=2800, interval=0.05)
    assert daemon_status(srv)["endpoint"]["oversize"] == 0
    for proc in (srv, cli):
        sess = _session(proc)
        assert 0 < sess["path_mtu"] <= 1200, sess
        assert sess["auth_failures"] == 0, sess


def _drop_large_udp(host, limit: int) -> None:
    """A middlebox that drops large UDP datagrams (as one that drops
    fragments does), in the server's namespace, both directions."""
    rules = (
        "table inet kcpvpn_test_pmtu {\n"
        "  chain in { type filter hook input priority 0; policy accept;\n"
        f"    udp dport 4000 ip length > {limit} drop; }}\n"
        "  chain out { type filter hook output priority 0; policy accept;\n"
        f"    udp sport 4000 ip length > {limit} drop; }}\n"
        "}\n"
    )
    host.run(["nft", "-f", "-"], input=rules.encode())


def test_a_path_that_drops_large_datagrams_is_reported(topo):
    _drop_large_udp(topo.server, 1028)  # UDP payloads above 1000 bytes
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server)
    ping(topo.client(1), "192.168.88.1", count=3)  # small packets pass
    for proc in (srv, cli):
        assert wait_until(lambda p=proc: "drops datagrams of 1350 bytes" in p.log(), 60), proc.log()
        line = next(x for x in proc.log().splitlines() if "drops datagrams" in x)
        works = int(line.split("(")[1].split()[0])
        assert 980 <= works <= 1000, line
        assert f"--udp-mtu {works}" in line
