"""Issue 5: the three IP modes. The server assigns from its pool; a client asks
for a fixed address with --local-ip (granted and reserved, or refused with the
reason); --no-ip-configuration leaves the client's interface without address."""

from __future__ import annotations

import pytest

from kcpvpn_lab.vpn import (
    client_address,
    link_info,
    ping,
    server_clients,
    start_client,
    start_server,
    wait_exit,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")


def refused(host, server, *flags: str) -> str:
    """Runs a client that must be refused; returns its log."""
    cli = start_client(host, server, *flags, wait=False)
    assert wait_exit(cli) != 0, cli.log()
    assert "the server refused the connection" in cli.log(), cli.log()
    assert not any(n.startswith("kvc") for n in host.links())
    return cli.log()


def test_fixed_address_is_granted_reserved_and_released(make_topology):
    topo = make_topology(clients=3)
    srv = start_server(topo.server, *SERVER_FLAGS)
    fixed = start_client(topo.client(1), topo.server, "--local-ip", "192.168.88.77")
    assert client_address(fixed) == "192.168.88.77"
    assert link_info(topo.client(1), "kvc0")["addresses"] == ["192.168.88.77/32"]
    ping(topo.client(1), SERVER_IP)
    ping(topo.server, "192.168.88.77")

    # Reserved: nobody else gets it, by asking or from the pool.
    log = refused(topo.client(2), topo.server, "--local-ip", "192.168.88.77")
    assert "192.168.88.77 is already in use" in log
    log = refused(topo.client(2), topo.server, "--local-ip", "10.9.9.9")
    assert "outside the server's address pool 192.168.88.0/24" in log
    log = refused(topo.client(2), topo.server, "--local-ip", SERVER_IP)
    assert "the server's own address" in log
    log = refused(topo.client(2), topo.server, "--local-ip", "192.168.88.255")
    assert "broadcast address" in log
    assert srv.alive()
    assigned = start_client(topo.client(3), topo.server)
    assert client_address(assigned) == "192.168.88.2"

    # Released when its holder leaves.
    assert fixed.stop() == 0
    assert wait_until(lambda: "and 192.168.88.77" in srv.log(), 5), srv.log()
    again = start_client(topo.client(2), topo.server, "--local-ip", "192.168.88.77")
    assert client_address(again) == "192.168.88.77"
    ping(topo.client(2), SERVER_IP)


def test_without_a_pool_clients_bring_an_allowed_address(make_topology):
    topo = make_topology(clients=2)
    start_server(topo.server, "--local-ip", SERVER_IP, "--allowed-client-ips", "172.31.0.0/16")
    log = refused(topo.client(1), topo.server)
    assert "no address pool" in log and "--local-ip" in log
    # The server routes a client's address to the client: one outside what
    # the operator allowed (its DNS resolver's, say) is refused.
    log = refused(topo.client(1), topo.server, "--local-ip", "10.0.0.53")
    assert "outside the addresses the server allows (172.31.0.0/16)" in log
    cli = start_client(topo.client(2), topo.server, "--local-ip", "172.31.5.9")
    assert client_address(cli) == "172.31.5.9"
    ping(topo.client(2), SERVER_IP)


def test_without_a_pool_or_allow_list_no_address_is_taken(make_topology):
    topo = make_topology(clients=1)
    start_server(topo.server, "--local-ip", SERVER_IP)
    log = refused(topo.client(1), topo.server, "--local-ip", "172.31.5.9")
    assert "no --assignable-ips pool and no --allowed-client-ips" in log


def test_no_ip_configuration_sets_no_address(make_topology):
    topo = make_topology(clients=1)
    srv = start_server(topo.server, *SERVER_FLAGS, "--vni-mtu", "1400")
    cli = start_client(topo.client(1), topo.server, "--no-ip-configuration")
    assert client_address(cli) is None
    info = link_info(topo.client(1), "kvc0")
    assert info["addresses"] == [] and info["up"] and info["mtu"] == 1400, info
    assert [(c["interface"], c["ip"]) for c in server_clients(srv)] == [("kvs0", None)]
    # The pool was not touched: the next assigned client gets the first address.
    assert "192.168.88.2" not in srv.log()
