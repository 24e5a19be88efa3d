"""Issue 5: IPv6. The underlay: the server listens on IPv6 (all addresses or
one), clients connect to an IPv6 address or to a host name that resolves to
one. Inside: IPv6 packets cross TUN tunnels, from an IPv6 address pool."""

from __future__ import annotations

import pytest

from kcpvpn_lab.vpn import (
    NetnsHosts,
    add_ipv6_underlay,
    client_address,
    link_info,
    ping,
    server_clients,
    start_client,
    start_server,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")


def remotes(srv) -> list[str]:
    """The clients' address:port as the server sees them, oldest session first."""
    return [c["remote"] for c in server_clients(srv)]


def test_dual_stack_server_takes_ipv4_and_ipv6_clients(make_topology):
    topo = make_topology(clients=2, ipv6=True)
    v6 = add_ipv6_underlay(topo)
    srv = start_server(topo.server, *SERVER_FLAGS)  # no --ip: every address, both families
    start_client(topo.client(1), topo.server)  # over IPv4
    start_client(topo.client(2), v6["server"])  # over IPv6
    got = remotes(srv)
    assert got[0].startswith(f"{topo.client(1).address}:")
    assert got[1].startswith(f"[{v6['client2']}]:")
    ping(topo.client(1), SERVER_IP)
    ping(topo.client(2), SERVER_IP)


def test_ipv6_only_listener_and_a_host_name(make_topology):
    topo = make_topology(clients=2, ipv6=True)
    v6 = add_ipv6_underlay(topo)
    srv = start_server(topo.server, "--ip", v6["server"], *SERVER_FLAGS)
    assert f"listening on [{v6['server']}]:" in srv.log()
    # client1 finds the server by name: /etc/hosts of its namespace.
    with NetnsHosts(topo.client(1), {"vpn-server.lab": v6["server"]}):
        cli = start_client(topo.client(1), "vpn-server.lab")
        ping(topo.client(1), SERVER_IP)
        assert remotes(srv)[0].startswith(f"[{v6['client1']}]:")
        assert cli.alive()
    # IPv4 is not served by an IPv6 listener: that client gets no answer.
    other = start_client(topo.client(2), topo.server, "--keepalive", "1", wait=False)
    assert not wait_until(lambda: any(r.startswith("10.") for r in remotes(srv)), 3)
    other.stop()


def test_ipv6_inside_the_tunnel(make_topology):
    topo = make_topology(clients=1, ipv6=True)
    v6 = add_ipv6_underlay(topo)
    start_server(topo.server, "--local-ip", "fd88::1", "--assignable-ips", "fd88::/64")
    cli = start_client(topo.client(1), v6["server"])
    assert client_address(cli) == "fd88::2"
    assert "fd88::2/128" in link_info(topo.client(1), "kvc0")["addresses"]
    ping(topo.client(1), "fd88::1")
    ping(topo.server, "fd88::2", size=1200)
