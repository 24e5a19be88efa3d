"""Issue 5: TAP mode and bridges. Ethernet frames cross the tunnel; per-client
TAPs on the server join its bridge (and get no address), so clients meet at
layer 2; a client's TAP may join a bridge of its own host the same way."""

from __future__ import annotations

import pytest

from kcpvpn_lab.probes import arp_probe, ether_probe
from kcpvpn_lab.vpn import (
    client_address,
    link_info,
    ping,
    start_client,
    start_server,
    wait_exit,
)

TAP_SERVER = (
    "--vni-mode",
    "tap",
    "--local-ip",
    "192.168.88.1",
    "--netmask",
    "255.255.255.0",
    "--assignable-ips",
    "192.168.88.2-192.168.88.254",
    "--bridge",
    "br0",
)


@pytest.mark.netns
def test_two_clients_meet_at_layer_2_on_the_servers_bridge(make_topology):
    topo = make_topology(clients=2, bridges=["server"])
    srv_host, c1, c2 = topo.server, topo.client(1), topo.client(2)
    srv_host.add_address("br0", "192.168.88.1/24")  # the bridge carries the server's address
    start_server(srv_host, *TAP_SERVER)
    a = start_client(c1, srv_host)
    b = start_client(c2, srv_host)
    assert (client_address(a), client_address(b)) == ("192.168.88.2", "192.168.88.3")
    assert "(tap)" in a.log()

    br = link_info(srv_host, "br0")["index"]
    for name in ("kvs0", "kvs1"):
        info = link_info(srv_host, name)
        assert info["master"] == br and info["addresses"] == [], info
    assert link_info(c1, "kvc0")["addresses"] == ["192.168.88.2/24"]

    # ARP resolves across the tunnel and the bridge, to the other client's TAP.
    assert arp_probe(c1, "kvc0", "192.168.88.3", src_ip="192.168.88.2") == c2.mac("kvc0")
    ping(c1, "192.168.88.3")
    ping(c2, "192.168.88.1")
    # A frame of a non-IP EtherType, broadcast and unicast, arrives unchanged.
    for dst in ("ff:ff:ff:ff:ff:ff", c2.mac("kvc0")):
        r = ether_probe(c1, "kvc0", c2, "kvc0", dst_mac=dst, size=300)
        assert r.intact, (dst, r.received)
    # A full-size frame (1500-byte MTU + Ethernet header) too.
    r = ether_probe(c2, "kvc0", c1, "kvc0", dst_mac=c1.mac("kvc0"), size=1514)
    assert r.intact


@pytest.mark.netns
def test_client_tap_joins_its_own_bridge(make_topology):
    # client1's LAN host reaches the server's bridge through client1's TAP,
    # which sits on client1's br0: a layer-2 site-to-site link.
    topo = make_topology(clients=1, bridges=["server"], lan_hosts={"client1": 1})
    srv_host, c1, lan = topo.server, topo.client(1), topo.host("client1-lan1")
    srv_host.add_address("br0", "10.78.0.1/24")
    srv = start_server(srv_host, "--vni-mode", "tap", "--bridge", "br0")
    cli = start_client(c1, srv_host, "--bridge", "br0")
    assert client_address(cli) is None
    info = link_info(c1, "kvc0")
    assert info["master"] == link_info(c1, "br0")["index"] and info["addresses"] == [], info
    assert link_info(srv_host, "kvs0")["master"] == link_info(srv_host, "br0")["index"]
    ping(lan, "10.78.0.1")
    ping(srv_host, str(lan.address))
    assert srv.alive()


@pytest.mark.netns
@pytest.mark.parametrize("side", ["server", "client"])
def test_missing_bridge_is_a_clear_error(topo, side):
    if side == "server":
        proc = start_server(topo.server, "--vni-mode", "tap", "--bridge", "nosuch0", wait=False)
    else:
        start_server(topo.server, "--vni-mode", "tap")
        proc = start_client(topo.client(1), topo.server, "--bridge", "nosuch0", wait=False)
    assert wait_exit(proc) != 0
    assert "bridge 'nosuch0' does not exist" in proc.log(), proc.log()
    assert "Traceback" not in proc.log()


def test_a_bridged_client_asks_for_no_address():
    """A bridge port carries no address, so a client with --bridge takes none
    from the server's pool (IP mode 2) unless it asks for one with --local-ip."""
    from kcpvpn.config import ClientConfig

    assert ClientConfig(bridge="br0").ip_mode == 2
    assert ClientConfig(bridge="br0", local_ip="10.0.0.5").ip_mode == 1
    assert ClientConfig().ip_mode == 0
