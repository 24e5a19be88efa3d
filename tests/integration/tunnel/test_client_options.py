"""Issue 5: client options: --vni-name, --persistent-vni (the interface outlives
the daemon and is reused by the next one, and across reconnects), and MTU
negotiation (the smaller of both sides, on both interfaces)."""

from __future__ import annotations

import pytest

from kcpvpn_lab.vpn import (
    connected_since,
    link_info,
    ping,
    start_client,
    start_server,
    wait_connected_again,
)

pytestmark = pytest.mark.netns

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")


def test_persistent_interface_survives_and_is_reused(topo):
    c = topo.client(1)
    start_server(topo.server, *SERVER_FLAGS)
    flags = ("--vni-name", "site-a.0", "--persistent-vni")
    first = start_client(c, topo.server, *flags, "--local-ip", "192.168.88.77")
    assert "interface site-a.0 (tun)" in first.log()
    assert "kvc0" not in c.links()
    index = link_info(c, "site-a.0")["index"]
    ping(c, SERVER_IP)
    assert first.stop() == 0
    assert link_info(c, "site-a.0") is not None, "a persistent interface outlives its daemon"

    second = start_client(c, topo.server, *flags)
    info = link_info(c, "site-a.0")
    assert info["index"] == index, "the same device is reused, not a new one"
    # The next session's address replaces the last one's.
    assert info["addresses"] == ["192.168.88.2/32"], info
    ping(c, SERVER_IP)
    assert second.stop() == 0

    # Started without --persistent-vni, the daemon takes it over and removes it at exit.
    third = start_client(c, topo.server, "--vni-name", "site-a.0")
    assert link_info(c, "site-a.0")["index"] == index
    ping(c, SERVER_IP)
    assert third.stop() == 0
    assert link_info(c, "site-a.0") is None


def test_persistent_interface_is_kept_across_reconnects(topo):
    c = topo.client(1)
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1")
    cli = start_client(c, topo.server, "--persistent-vni", "--auto-reconnect", "--keepalive", "1")
    index = link_info(c, "kvc0")["index"]
    since = connected_since(cli)
    assert srv.stop() == 0
    start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1")
    wait_connected_again(cli, since, timeout=40)
    assert link_info(c, "kvc0")["index"] == index
    ping(c, SERVER_IP, count=5)


def test_mtu_is_negotiated_down_to_the_clients(topo):
    start_server(topo.server, *SERVER_FLAGS, "--vni-mtu", "1500")
    start_client(topo.client(1), topo.server, "--vni-mtu", "1280")
    assert link_info(topo.client(1), "kvc0")["mtu"] == 1280
    assert link_info(topo.server, "kvs0")["mtu"] == 1280
    ping(topo.client(1), SERVER_IP, size=1252, extra=["-M", "do"])
    with pytest.raises(AssertionError):  # one byte more does not fit
        ping(topo.client(1), SERVER_IP, count=1, size=1253, extra=["-M", "do"])
