"""Fault: an interface deleted underneath a running daemon. Before: after
`ip link del kvs0` the server's data path spun (8 CPU-seconds and 268,699
log lines in 5 s) and the client was never told."""

from __future__ import annotations

import time

import pytest

from kcpvpn_lab.vpn import (
    client_address,
    connected_since,
    daemon_status,
    ping,
    start_client,
    start_server,
    wait_until,
)

from .conftest import SERVER_FLAGS, SERVER_IP, connected, cpu_seconds, kvs, open_fds, wait_for

pytestmark = pytest.mark.netns


def test_a_deleted_server_interface_ends_that_session_cleanly(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    fds0 = open_fds(srv.pid)
    assert kvs(topo.server) == ["kvs0"]
    cpu0 = cpu_seconds(srv.pid)
    lines0 = len(srv.log().splitlines())
    topo.server.run(["ip", "link", "del", "kvs0"])
    # One line says why; the address goes back to the pool.
    assert wait_until(lambda: "its interface was deleted or failed" in srv.log(), 5), srv.log()
    assert wait_until(lambda: "released kvs0 and 192.168.88.2" in srv.log(), 5), srv.log()
    time.sleep(3)
    assert cpu_seconds(srv.pid) - cpu0 < 0.5, "the data path must not spin"
    assert len(srv.log().splitlines()) - lines0 < 15, srv.log()
    # The client was told (an authenticated close) and came back at once.
    assert "session ended: closed by peer" in cli.log(), cli.log()
    assert wait_for(lambda: connected(cli) and connected_since(cli) != since, 10) is not None
    ping(topo.client(1), SERVER_IP)
    assert client_address(cli) == "192.168.88.2", "the released address is handed out again"
    assert srv.alive() and len(daemon_status(srv)["clients"]) == 1
    # Nothing leaked: one interface, as many descriptors as before.
    assert kvs(topo.server) == ["kvs0"]
    assert open_fds(srv.pid) == fds0


def test_a_persistent_client_interface_is_made_again(topo):
    start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--persistent-vni")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    topo.client(1).run(["ip", "link", "del", "kvc0"])
    assert wait_until(lambda: "its interface was deleted or failed" in cli.log(), 5), cli.log()
    assert wait_for(lambda: connected(cli) and connected_since(cli) != since, 10) is not None, (
        cli.log()
    )
    assert "kvc0" in topo.client(1).links()
    ping(topo.client(1), SERVER_IP)
    assert cli.alive()
