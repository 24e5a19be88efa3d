"""Claim: in TAP mode, Ethernet frames cross a bridged path. The server's
per-client TAP joins its bridge br0, where a LAN host sits; a client's TAP
gets an address from the same subnet, so the client and the LAN host meet at
layer 2: ARP resolves both ways and raw frames of a non-IP EtherType
(broadcast and unicast, up to a full 1514-byte frame) arrive unchanged."""

from __future__ import annotations

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import (
    client_address,
    link_info,
    sessions_of,
    start_client,
    start_server,
    status_socket,
    status_when,
    wait_reachable,
)

pytestmark = pytest.mark.netns


def test_arp_and_raw_frames_cross_the_bridged_tunnel(make_topology):
    topo = make_topology(clients=1, bridges=["server"], lan_hosts={"server": 1})
    srv_host, c1, lan = topo.server, topo.client(1), topo.host("server-lan1")
    sock = status_socket(srv_host, "server")
    # The pool is a slice of the LAN's subnet (10.78.0.0/24; the LAN host is .100).
    start_server(
        srv_host,
        "--vni-mode",
        "tap",
        "--netmask",
        "255.255.255.0",
        "--assignable-ips",
        "10.78.0.200-10.78.0.250",
        "--bridge",
        "br0",
        "--status-socket",
        sock,
    )
    cli = start_client(c1, srv_host)
    ip = client_address(cli)
    assert ip == "10.78.0.200"
    assert link_info(srv_host, "kvs0")["master"] == link_info(srv_host, "br0")["index"]
    assert link_info(c1, "kvc0")["addresses"] == ["10.78.0.200/24"]
    tap_mac, lan_mac = c1.mac("kvc0"), lan.mac("eth0")

    # ARP both ways: the answers come from the far side's own interface.
    assert probes.arp_probe(c1, "kvc0", str(lan.address), src_ip=ip, timeout=3) == lan_mac
    assert probes.arp_probe(lan, "eth0", ip, src_ip=str(lan.address), timeout=3) == tap_mac

    # Raw frames (EtherType 0x88B5), broadcast and unicast, small and full size.
    failures = []
    for src, src_if, dst, dst_if, dst_mac in (
        (c1, "kvc0", lan, "eth0", lan_mac),
        (c1, "kvc0", lan, "eth0", "ff:ff:ff:ff:ff:ff"),
        (lan, "eth0", c1, "kvc0", tap_mac),
        (lan, "eth0", c1, "kvc0", "ff:ff:ff:ff:ff:ff"),
    ):
        for size in (60, 300, 1514):
            r = probes.ether_probe(src, src_if, dst, dst_if, dst_mac=dst_mac, size=size, timeout=3)
            if not r.intact:
                failures.append(
                    f"{src.name} → {dst.name} to {dst_mac}, {size} bytes: {r.received!r}"
                )
    assert not failures, "\n".join(failures)

    # IP over it too, and the frames went through the tunnel's session.
    wait_reachable(c1, str(lan.address))
    doc = status_when(sock, lambda d: sessions_of(d) and sessions_of(d)[0]["packets_out"] >= 6)
    assert doc["vni_mode"] == "tap"
