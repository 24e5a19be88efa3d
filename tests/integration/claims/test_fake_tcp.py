"""Claims of fake TCP (`--tcp`): the tunnel crosses a strict stateful
firewall with NAT that drops all UDP, the wire holds only real-looking TCP,
a middlebox that forgets the flow costs a reconnection (not the session),
and the host's own TCP stack stays silent (no reset) without a firewall
rule, nothing of the daemon outliving it.

The middlebox (kcpvpn_lab.topology.MIDDLEBOX_RULES): Linux conntrack with
default window tracking (not liberal, no mid-stream pick-up); established
flows and new SYNs cross, invalid packets and every UDP datagram are
dropped; the clients are masqueraded behind its address."""

from __future__ import annotations

import signal
import time

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.topology import MBOX_ADDR
from kcpvpn_lab.vpn import (
    add_ipv6_underlay,
    client_address,
    connected_since,
    daemon_status,
    ping,
    server_clients,
    start_client,
    start_server,
    wait_until,
)

from .conftest import POOL, SERVER_IP, add_client, open_tun

pytestmark = pytest.mark.netns

PORT = 4000
TCP = ("--tcp",)


def _ping_once(host, ip: str) -> bool:
    return host.run(["ping", "-n", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def test_through_a_strict_firewall_with_nat(make_topology):
    topo = make_topology(clients=1, middlebox=True, seed=21)
    c, s = topo.client(1), topo.server
    # UDP does not cross this middlebox: UDP mode is no option on this path.
    assert not probes.udp_probe(c, s, dst_ip=str(s.address)).arrived
    before = topo.middlebox_counters()
    assert before["udp"] == 1, before

    wire = probes.WireRecord(s, "eth0")
    tun = open_tun(topo, TCP, TCP)
    ping(c, tun.server_ip, count=20, interval=0.05)
    ping(s, tun.client_ip, count=5, interval=0.05)
    check = probes.check_tcp_wire(wire.packets(), PORT)
    print(check)
    # Only TCP crossed, one connection, seen from the middlebox's address
    # (NAT), opened by a three-way handshake; then sequence numbers without
    # a gap, valid checksums, no reset.
    assert check.packets > 50, check
    assert check.clean, check
    assert len(check.handshakes) == 1, check
    assert next(iter(check.handshakes)).startswith(f"{MBOX_ADDR}:"), check

    # A TCP transfer each way through the tunnel, intact, and iperf3 for the rate.
    for src, dst, ip in ((c, s, tun.server_ip), (s, c, tun.client_ip)):
        t = probes.tcp_transfer(src, dst, dst_ip=ip, nbytes=4 << 20)
        assert t.intact, t
    up = probes.iperf3(c, s, dst_ip=tun.server_ip, seconds=3)
    down = probes.iperf3(c, s, dst_ip=tun.server_ip, seconds=3, extra=("-R",))
    print(
        f"through the middlebox: up {up.bits_per_second / 1e6:.0f} Mbit/s, "
        f"down {down.bits_per_second / 1e6:.0f} Mbit/s"
    )
    assert up.bits_per_second > 20e6 and down.bits_per_second > 20e6, (up, down)

    after = topo.middlebox_counters()
    counters = {k: after[k] - before.get(k, 0) for k in after}
    print(counters)
    # Nothing the firewall found invalid, no UDP, one SYN: one connection
    # carried all of it.
    assert counters["invalid"] == 0, counters
    assert counters["udp"] == 0, counters
    assert counters["new_syn"] == 1, counters
    assert counters["established"] > 10_000, counters


def test_two_clients_behind_one_nat_share_the_server_port(make_topology):
    topo = make_topology(clients=2, middlebox=True, seed=24)
    tun = open_tun(topo, TCP, TCP)
    tun2 = add_client(tun, 2, TCP)
    remotes = [c["remote"] for c in server_clients(tun.server)]
    # Both behind the middlebox's one address, told apart by their ports.
    assert len(remotes) == 2 and len(set(remotes)) == 2, remotes
    assert all(r.startswith(f"{MBOX_ADDR}:") for r in remotes), remotes
    ping(topo.client(1), tun.server_ip, count=10, interval=0.05)
    ping(topo.client(2), tun2.server_ip, count=10, interval=0.05)
    ping(topo.server, tun.client_ip, count=3)
    ping(topo.server, tun2.client_ip, count=3)
    counters = topo.middlebox_counters()
    assert counters["invalid"] == 0 and counters["new_syn"] == 2, counters
    ep = daemon_status(tun.server)["endpoint"]
    assert ep["tcp_connections"] == 2, ep


def test_ping_and_tcp_on_a_lossy_link_through_the_middlebox(make_topology):
    """5% loss each way and 10 ms delay, behind the strict firewall: pings
    all come back (KCP repairs the lost segments), a TCP transfer arrives
    intact, and the firewall still finds nothing invalid: a lost segment
    leaves a gap in the sequence numbers, which conntrack accepts, as it does
    for a real stack's losses."""
    topo = make_topology(clients=1, middlebox=True, seed=23)
    c, s = topo.client(1), topo.server
    tun = open_tun(topo, TCP, TCP)  # connected on a clean link; the loss starts now
    topo.impair({"loss": 0.05, "delay_ms": 10})
    before = topo.middlebox_counters()
    r = probes.ping(c, tun.server_ip, count=100, interval=0.02, wait=3)
    assert r.loss == 0, r.output
    for src, dst, ip in ((c, s, tun.server_ip), (s, c, tun.client_ip)):
        t = probes.tcp_transfer(src, dst, dst_ip=ip, nbytes=2 << 20)
        assert t.intact, t
    up = probes.iperf3(c, s, dst_ip=tun.server_ip, seconds=3)
    print(f"5% loss, 10 ms, through the middlebox: {up.bits_per_second / 1e6:.1f} Mbit/s")
    assert up.bits_per_second > 1e6, up
    stats = topo.emulator_stats()
    for d in ("to_server", "to_client"):
        assert stats[d]["dropped_loss"] > 10, stats
    after = topo.middlebox_counters()
    assert after["invalid"] == before["invalid"], (before, after)
    assert after["new_syn"] == before["new_syn"], "the connection was never lost"


def test_a_middlebox_that_forgets_the_flow_costs_a_reconnection_not_the_session(make_topology):
    topo = make_topology(clients=1, middlebox=True, seed=22)
    c = topo.client(1)
    tun = open_tun(topo, TCP, TCP)
    since = connected_since(tun.client)
    ping(c, tun.server_ip, count=3)
    assert topo.middlebox_counters()["new_syn"] == 1

    topo.flush_conntrack()
    t0 = time.monotonic()
    # The old flow is now invalid at the middlebox (no mid-stream pick-up);
    # the client hears nothing, gives the connection up and opens a new one.
    assert wait_until(lambda: _ping_once(c, tun.server_ip), timeout=20, interval=0.2), (
        f"no traffic 20 s after the flush; client log:\n{tun.client.log()}"
    )
    took = time.monotonic() - t0
    print(f"traffic resumed {took:.1f} s after the conntrack flush")
    assert took < 10
    ping(c, tun.server_ip, count=5, interval=0.1)
    assert topo.middlebox_counters()["new_syn"] >= 2
    # The same session carried on over the new connection.
    assert connected_since(tun.client) == since
    ep = daemon_status(tun.client)["endpoint"]
    assert ep["tcp_reconnects"] >= 1 and ep["tcp_connects"] >= 2, ep
    # And the new connection is as clean as the first: a transfer crosses.
    t = probes.tcp_transfer(c, topo.server, dst_ip=tun.server_ip, nbytes=2 << 20)
    assert t.intact, t


SERVER_FLAGS = ("--tcp", "--local-ip", SERVER_IP, "--assignable-ips", POOL)


def test_a_client_that_changes_address_keeps_its_session(topo):
    """Roaming as in UDP mode: the client's address changes (a new uplink);
    its connection, bound to the old address, goes silent, so it opens a new
    one from the new address, and the server's endpoint follows the session
    there."""
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--tcp")
    c = topo.client(1)
    ping(c, SERVER_IP)
    since = connected_since(cli)
    old = str(c.address)
    new = old.rsplit(".", 1)[0] + ".200"
    c.run(["ip", "addr", "del", f"{old}/24", "dev", c.ifname])
    c.run(["ip", "addr", "add", f"{new}/24", "dev", c.ifname])
    t0 = time.monotonic()
    assert wait_until(lambda: _ping_once(c, SERVER_IP), timeout=20, interval=0.2), cli.log()
    print(f"traffic resumed {time.monotonic() - t0:.1f} s after the address changed")
    ping(c, SERVER_IP, count=5)
    assert srv.wait_for_log(f"moved to {new}", timeout=5), srv.log()
    assert connected_since(cli) == since, "the session must go on, not reconnect"


def test_a_restarted_server_is_back_with_the_same_client(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--tcp", "--auto-reconnect")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    srv.send_signal(signal.SIGKILL)  # no goodbye
    srv.wait(timeout=5)
    t0 = time.monotonic()
    srv2 = start_server(topo.server, *SERVER_FLAGS)
    assert wait_until(
        lambda: _connected_anew(cli, since) and _ping_once(topo.client(1), SERVER_IP),
        timeout=25,
        interval=0.2,
    ), cli.log()
    print(f"back {time.monotonic() - t0:.1f} s after the server restarted")
    assert cli.alive() and srv2.alive()


def _connected_anew(cli, since: float) -> bool:
    try:
        doc = daemon_status(cli, timeout=1)
    except (OSError, ValueError):
        return False
    return doc.get("state") == "connected" and (doc.get("since") or 0) != since


def _out_rsts(host) -> int:
    """Resets the host's TCP stack has sent (/proc/net/snmp, Tcp OutRsts)."""
    lines = [ln.split() for ln in host.run(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    tcp = [ln for ln in lines if ln and ln[0] == "Tcp:"]
    return int(tcp[1][tcp[0].index("OutRsts")])


def test_the_host_stack_stays_silent_and_nothing_outlives_the_daemon(topo):
    """No socket of the host's TCP stack owns a fake-TCP flow, so the stack
    would answer each segment with a reset. Each side holds its port with a
    listening socket whose filter drops every segment: the stack discards
    them without a word, the host's firewall is left alone, and a daemon
    killed with SIGKILL leaves nothing behind (the kernel closes its
    sockets), so the next one starts on the same port at once."""
    s, c = topo.server, topo.client(1)
    srv = start_server(s, *SERVER_FLAGS)
    cli = start_client(c, s, "--tcp")
    ping(c, SERVER_IP, count=20, interval=0.02)
    t = probes.tcp_transfer(c, s, dst_ip=SERVER_IP, nbytes=2 << 20)
    assert t.intact, t
    assert _out_rsts(s) == 0 and _out_rsts(c) == 0
    for h in (s, c):
        assert h.run(["nft", "list", "ruleset"]).stdout.strip() == "", h.name
    listening = s.run(["ss", "-Hltn", f"sport = :{PORT}"]).stdout
    assert f":{PORT}" in listening, listening

    # The port is held: a second server on it says so and exits.
    clash = start_server(s, *SERVER_FLAGS, wait=False)
    assert clash.wait(timeout=20) != 0
    assert f"cannot hold TCP port {PORT}" in clash.log(), clash.log()

    srv.send_signal(signal.SIGKILL)
    srv.wait(timeout=5)
    assert s.run(["ss", "-Hltn", f"sport = :{PORT}"]).stdout.strip() == ""
    srv2 = start_server(s, *SERVER_FLAGS)
    # (While no server held the port, the stack did answer the client's
    # segments with resets, as it should: they tell the client at once.)
    cli.stop()
    srv2.stop()
    for h in (s, c):
        assert h.run(["nft", "list", "ruleset"]).stdout.strip() == "", h.name


def test_dual_stack_server_takes_ipv4_and_ipv6_clients(make_topology):
    """One --tcp server on both families: a client over IPv4 and one over
    IPv6 on the same port, each its own connection; the IPv6 segments carry
    valid checksums too (the checker reads IPv4 only, so the IPv6 one is
    verified by the server's counters: nothing bad, nothing stray)."""
    topo = make_topology(clients=2, ipv6=True)
    v6 = add_ipv6_underlay(topo)
    srv = start_server(topo.server, *SERVER_FLAGS)  # no --ip: every address, both families
    start_client(topo.client(1), topo.server, "--tcp")
    cli6 = start_client(topo.client(2), v6["server"], "--tcp")
    remotes = [c["remote"] for c in server_clients(srv)]
    assert remotes[0].startswith(f"{topo.client(1).address}:"), remotes
    assert remotes[1].startswith(f"[{v6['client2']}]:"), remotes
    ping(topo.client(1), SERVER_IP, count=10, interval=0.05)
    ping(topo.client(2), SERVER_IP, count=10, interval=0.05)
    t = probes.tcp_transfer(topo.client(2), topo.server, dst_ip=SERVER_IP, nbytes=2 << 20)
    assert t.intact, t
    ep = daemon_status(srv)["endpoint"]
    assert ep["tcp_connections"] == 2 and ep["tcp_bad"] == 0, ep
    # The IPv6 client's segments left in runs the kernel cut, too.
    assert daemon_status(cli6)["endpoint"]["tcp_offload_out"] > 0


def test_runs_the_kernel_cuts_reach_the_wire_as_plain_segments(make_topology):
    """Where the host tracks no connections, each daemon hands runs of
    segments to the kernel through a packet socket for it to cut (TSO). On
    the wire they are ordinary segments: continuous sequence numbers, valid
    checksums, no reset, nothing the strict firewall finds invalid; and the
    bytes carried arrive intact both ways."""
    topo = make_topology(clients=1, middlebox=True, seed=23)
    c, s = topo.client(1), topo.server
    before = topo.middlebox_counters()
    wire = probes.WireRecord(s, "eth0")
    tun = open_tun(topo, TCP, TCP)
    for src, dst, ip in ((c, s, tun.server_ip), (s, c, tun.client_ip)):
        t = probes.tcp_transfer(src, dst, dst_ip=ip, nbytes=2 << 20)
        assert t.intact, t
    check = probes.check_tcp_wire(wire.packets(), PORT)
    print(check.packets, "segments recorded")
    assert check.packets > 2000, check
    assert check.clean, check
    after = topo.middlebox_counters()
    assert after["invalid"] - before.get("invalid", 0) == 0, after
    for proc in (tun.client, tun.server):
        ep = daemon_status(proc)["endpoint"]
        print(proc.ns, ep["tcp_offload_out"], ep["gso_messages"], ep["datagrams_out"])
        # Most datagrams left in runs, and runs of more than one.
        assert ep["tcp_offload_out"] > ep["datagrams_out"] // 2, ep
        assert ep["gso_messages"] < ep["tcp_offload_out"], ep


def test_a_run_delivered_whole_is_split_back_into_its_datagrams(make_topology):
    """On virtual links with segmentation offload on (a kernel bridge, no
    emulator), a run crosses whole: the receiver reads one packet holding
    many frames, and splits it back into its datagrams by their lengths.
    Bytes arrive intact both ways."""
    topo = make_topology(clients=1, wan=False)
    s, c = topo.server, topo.client(1)
    srv = start_server(s, *SERVER_FLAGS)
    cli = start_client(c, s, "--tcp")
    for src, dst in ((c, s), (s, c)):
        ip = SERVER_IP if dst is s else client_address(cli)
        t = probes.tcp_transfer(src, dst, dst_ip=ip, nbytes=8 << 20)
        assert t.intact, t
    for proc in (srv, cli):
        ep = daemon_status(proc)["endpoint"]
        print(proc.ns, ep["tcp_merged_in"], ep["tcp_offload_out"], ep["tcp_bad"])
        assert ep["tcp_merged_in"] > 0, ep
        assert ep["tcp_bad"] == 0, ep


def _endpoint_when(proc, cond, timeout: float = 3.0) -> dict:
    """The daemon's endpoint counters once `cond` holds (or at the timeout):
    status is published every 250 ms, and a transfer may end sooner."""
    deadline = time.monotonic() + timeout
    ep = daemon_status(proc)["endpoint"]
    while not cond(ep) and time.monotonic() < deadline:
        time.sleep(0.1)
        ep = daemon_status(proc)["endpoint"]
    return ep


def test_where_the_host_tracks_connections_every_segment_crosses_its_hooks(topo):
    """A client host whose firewall tracks connections and drops what it
    finds invalid (as firewalld or ufw do): segments sent past its hooks
    would make it judge the server's acknowledgements invalid. So the packet
    path stays off there, and the tunnel carries traffic as before."""
    s, c = topo.server, topo.client(1)
    c.run(["nft", "-f", "-"], input=HOST_FIREWALL.encode())
    try:
        srv = start_server(s, *SERVER_FLAGS)
        cli = start_client(c, s, "--tcp")
        ping(c, SERVER_IP, count=10, interval=0.05)
        for src, dst in ((c, s), (s, c)):
            ip = SERVER_IP if dst is s else client_address(cli)
            t = probes.tcp_transfer(src, dst, dst_ip=ip, nbytes=2 << 20)
            assert t.intact, t
        client_ep = _endpoint_when(cli, lambda ep: ep["datagrams_out"] > 1000)
        assert client_ep["tcp_offload_out"] == 0, client_ep
        assert client_ep["datagrams_out"] > 1000, client_ep
        # The server's host tracks nothing: its side uses the packet path.
        server_ep = _endpoint_when(srv, lambda ep: ep["tcp_offload_out"] > 0)
        assert server_ep["tcp_offload_out"] > 0, server_ep
        dropped = c.run(["nft", "list", "counter", "inet", "hostfw", "invalid"]).stdout
        assert "packets 0 " in dropped, dropped
    finally:
        c.run(["nft", "delete", "table", "inet", "hostfw"], check=False)


HOST_FIREWALL = """
table inet hostfw {
    counter invalid { }
    chain input {
        type filter hook input priority 0; policy accept;
        ct state invalid counter name invalid drop
        ct state established,related accept
    }
}
"""
