"""Issue 5: one server, several clients at once (TUN mode). Each client has its
own session, its own server interface and its own address; the one data-path
thread serves them all, and clients coming and going do not disturb others."""

from __future__ import annotations

import signal

import pytest

from kcpvpn_lab.vpn import (
    client_address,
    connected_since,
    link_counters,
    link_info,
    ping,
    ping_in_background,
    ping_losses,
    server_clients,
    start_client,
    start_server,
    wait_exit,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")


def server_interfaces(srv) -> dict[str, tuple[str, str]]:
    """client id -> (server interface, address), from the server's status."""
    return {c["client_id"]: (c["interface"], c["ip"]) for c in server_clients(srv)}


def test_three_clients_get_distinct_addresses_and_interfaces(make_topology):
    topo = make_topology(clients=3)
    srv = start_server(topo.server, *SERVER_FLAGS)
    clis = [
        start_client(c, topo.server, "--client-id", f"c{i}") for i, c in enumerate(topo.clients)
    ]
    addrs = [client_address(c) for c in clis]
    assert addrs == ["192.168.88.2", "192.168.88.3", "192.168.88.4"]
    assert server_interfaces(srv) == {
        "c0": ("kvs0", addrs[0]),
        "c1": ("kvs1", addrs[1]),
        "c2": ("kvs2", addrs[2]),
    }
    for i, (host, addr) in enumerate(zip(topo.clients, addrs, strict=True)):
        info = link_info(topo.server, f"kvs{i}")
        assert info and info["up"], info
        ping(host, SERVER_IP)
        ping(topo.server, addr)

    # SIGTERM: the server says goodbye to every client and removes every interface.
    assert srv.stop() == 0
    assert not any(n.startswith("kvs") for n in topo.server.links())
    for c in clis:
        assert wait_exit(c, timeout=10) != 0  # no --auto-reconnect: the session ended
        assert "session ended" in c.log()


def test_traffic_of_one_client_stays_off_other_interfaces(make_topology):
    topo = make_topology(clients=3)
    start_server(topo.server, *SERVER_FLAGS)
    for i, c in enumerate(topo.clients):
        start_client(c, topo.server, "--client-id", f"c{i}")
    c0, c1 = topo.clients[0], topo.clients[1]
    before = {n: link_counters(topo.server, n) for n in ("kvs1", "kvs2")}
    ping(c0, SERVER_IP, count=10, interval=0.05)
    after = {n: link_counters(topo.server, n) for n in ("kvs1", "kvs2")}
    assert after == before, "client 0's pings showed up on another client's interface"

    # Client 0 routes the whole tunnel subnet into its tunnel; the server does
    # not forward (ip_forward=0 in its namespace), so client 1 sees nothing.
    for host, dev in ((c0, "kvc0"), (c1, "kvc0")):
        host.run(["ip", "route", "add", "192.168.88.0/24", "dev", dev])
    before = link_counters(topo.server, "kvs1")
    with pytest.raises(AssertionError):
        ping(c0, "192.168.88.3", count=3, interval=0.1)
    assert link_counters(topo.server, "kvs1")["tx_packets"] == before["tx_packets"]

    # Routed by the host: with forwarding on, client 0 reaches client 1.
    topo.server.sysctl("net.ipv4.ip_forward", 1)
    ping(c0, "192.168.88.3", count=3)
    assert link_counters(topo.server, "kvs1")["tx_packets"] > before["tx_packets"]
    assert link_counters(topo.server, "kvs2") == after["kvs2"]


def test_clients_coming_and_going_do_not_disturb_a_flow(make_topology):
    topo = make_topology(clients=3)
    srv = start_server(topo.server, *SERVER_FLAGS)
    steady = start_client(topo.client(1), topo.server, "--client-id", "steady")
    since = connected_since(steady)
    pinger = ping_in_background(topo.client(1), SERVER_IP, count=60, interval=0.1)
    # While the steady client pings: one joins and leaves cleanly, one joins
    # and is killed outright, one joins and stays.
    a = start_client(topo.client(2), topo.server, "--client-id", "a")
    b = start_client(topo.client(3), topo.server, "--client-id", "b")
    ping(topo.client(2), SERVER_IP, count=2, interval=0.1)
    assert a.stop() == 0
    assert srv.wait_for_log("client a disconnected", timeout=5), srv.log()
    b.send_signal(signal.SIGKILL)
    start_client(topo.client(2), topo.server, "--client-id", "a2")
    sent, lost = ping_losses(pinger)
    assert (sent, lost) == (60, 0), pinger.log()
    assert steady.alive() and srv.alive()
    assert connected_since(steady) == since, "the steady client had to reconnect"


def test_pool_exhausted_is_reported_and_the_server_goes_on(make_topology):
    topo = make_topology(clients=3)
    srv = start_server(
        topo.server, "--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.2-192.168.88.3"
    )
    c1 = start_client(topo.client(1), topo.server)
    c2 = start_client(topo.client(2), topo.server)
    assert {client_address(c1), client_address(c2)} == {"192.168.88.2", "192.168.88.3"}
    c3 = start_client(topo.client(3), topo.server, wait=False)
    assert wait_exit(c3) != 0
    assert "refused" in c3.log() and "exhausted" in c3.log(), c3.log()
    assert not any(n.startswith("kvc") for n in topo.client(3).links())
    assert srv.alive()
    ping(topo.client(1), SERVER_IP)
    ping(topo.client(2), SERVER_IP)

    # A client leaves: its address goes back and the next client gets it.
    freed = client_address(c1)
    assert c1.stop() == 0
    assert wait_until(lambda: f"and {freed}" in srv.log(), 5), srv.log()
    c3 = start_client(topo.client(3), topo.server)
    assert client_address(c3) == freed
    ping(topo.client(3), SERVER_IP)
