"""Smaller holes found by reading the code: a client the server's policy
cannot set up is refused and the server goes on; both sides keep to the
shorter keepalive period."""

from __future__ import annotations

import time

import pytest

from kcpvpn_lab.vpn import (
    connected_since,
    daemon_status,
    ping,
    start_client,
    start_server,
    wait_exit,
)

from .conftest import SERVER_FLAGS, SERVER_IP

pytestmark = pytest.mark.netns


def test_a_client_the_policy_cannot_set_up_is_refused_and_nothing_leaks(make_topology):
    """Before: TAP mode with an IPv6 netmask and a client asking for an IPv4
    address raised in accept, which ended the server and leaked the interface."""
    topo = make_topology(clients=2)
    srv = start_server(
        topo.server, "--vni-mode", "tap", "--local-ip", "fd00::1", "--netmask", "64",
        "--allowed-client-ips", "10.99.0.0/24,fd00::/64",
    )  # fmt: skip
    bad = start_client(topo.client(1), topo.server, "--local-ip", "10.99.0.5", wait=False)
    assert wait_exit(bad) == 1
    assert "the server refused the connection" in bad.log(), bad.log()
    assert srv.alive(), srv.log()
    assert [n for n in topo.server.links() if n.startswith("kvs")] == []
    assert daemon_status(srv)["clients"] == []
    # The next client is served as usual (the lab's hosts run without IPv6,
    # so it takes no address).
    good = start_client(topo.client(2), topo.server, "--no-ip-configuration")
    assert len(daemon_status(srv)["clients"]) == 1
    assert good.alive() and srv.alive()


def test_both_sides_keep_to_the_shorter_keepalive(topo):
    """Before: a client with --keepalive 60 against a server with a shorter
    period was dropped as idle by the server (after 3 of its periods)."""
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "3")  # idle after 10 s
    cli = start_client(topo.client(1), topo.server, "--keepalive", "60")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    time.sleep(15)  # idle, longer than the server's timeout
    assert connected_since(cli) == since, cli.log()
    assert "disconnected" not in srv.log()
    ping(topo.client(1), SERVER_IP)
