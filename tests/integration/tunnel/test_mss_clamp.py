"""Issue 5: MSS clamping. A TCP SYN crossing the tunnel with an MSS larger than
the tunnel's MTU allows arrives with the MSS lowered (MTU - 40 for IPv4,
MTU - 60 for IPv6); --no-mss-clamp leaves it alone. The SYN is written
straight into the client's TUN (as a host behind it would route one) and
captured on the server's interface.

The data path also clamps to what one KCP segment carries (about --udp-mtu
minus the tunnel's overhead) when that is smaller than the interface MTU; the
MTUs here are chosen so the interface MTU is the bound."""

from __future__ import annotations

import socket

import pytest

from kcpvpn_lab.probes import Capture
from kcpvpn_lab.vpn import add_ipv6_underlay, start_client, start_server

pytestmark = pytest.mark.netns

MTU = 1200  # below one segment of the default --udp-mtu 1350
MTU6 = 1280  # IPv6's minimum; with --udp-mtu 1400 one segment is larger


def syn_mss(src_host, dst_host, src: str, dst: str, mss: int, sport: int, flags: str = "S"):
    """Sends a SYN with MSS `mss` into src's kvc0, returns the TCP layer that
    came out of dst's kvs0 (None if nothing did)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    v6 = ":" in src
    net = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    pkt = net / TCP(sport=sport, dport=80, flags=flags, seq=1, options=[("MSS", mss)])
    pkt = (IPv6 if v6 else IP)(bytes(pkt))  # checksums filled in
    proto = 0x86DD if v6 else 0x0800
    with (
        Capture(dst_host, "kvs0") as cap,
        src_host.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(proto)) as s,
    ):
        s.sendto(bytes(pkt), ("kvc0", proto))
        raw = cap.wait_for(lambda d: is_ours((IPv6 if v6 else IP)(d), sport), 3)
    return None if raw is None else (IPv6 if v6 else IP)(raw)[TCP]


def is_ours(pkt, sport: int) -> bool:
    """Our probe, not the kernel's own traffic on the tunnel (router solicitations...)."""
    from scapy.layers.inet import TCP

    return TCP in pkt and pkt[TCP].sport == sport


def mss_of(tcp) -> int | None:
    return dict(tcp.options).get("MSS")


@pytest.mark.parametrize("clamp", [True, False], ids=["clamped", "no-mss-clamp"])
def test_syn_mss_is_clamped_to_the_tunnel_mtu(topo, clamp):
    off = () if clamp else ("--no-mss-clamp",)
    start_server(
        topo.server,
        "--local-ip",
        "192.168.88.1",
        "--assignable-ips",
        "192.168.88.0/24",
        "--vni-mtu",
        str(MTU),
        *off,
    )
    start_client(topo.client(1), topo.server, *off)
    tcp = syn_mss(topo.client(1), topo.server, "192.168.88.2", "192.168.88.1", 1460, 40100)
    assert tcp is not None, "the SYN did not cross"
    assert mss_of(tcp) == (MTU - 40 if clamp else 1460)
    # A small MSS is left as it is.
    tcp = syn_mss(topo.client(1), topo.server, "192.168.88.2", "192.168.88.1", 536, 40101)
    assert mss_of(tcp) == 536
    # A SYN-ACK is clamped too.
    tcp = syn_mss(topo.client(1), topo.server, "192.168.88.2", "192.168.88.1", 9000, 40102, "SA")
    assert mss_of(tcp) == (MTU - 40 if clamp else 9000)


def test_ipv6_syn_mss_is_clamped(make_topology):
    topo = make_topology(clients=1, ipv6=True)
    v6 = add_ipv6_underlay(topo)
    flags = ("--vni-mtu", str(MTU6), "--udp-mtu", "1400")
    start_server(topo.server, "--local-ip", "fd88::1", "--assignable-ips", "fd88::/64", *flags)
    start_client(topo.client(1), v6["server"], *flags)
    tcp = syn_mss(topo.client(1), topo.server, "fd88::2", "fd88::1", 1440, 40200)
    assert tcp is not None, "the SYN did not cross"
    assert mss_of(tcp) == MTU6 - 60


def test_default_mtu_clamps_below_the_interface_mtu(topo):
    start_server(topo.server, "--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")
    start_client(topo.client(1), topo.server)
    tcp = syn_mss(topo.client(1), topo.server, "192.168.88.2", "192.168.88.1", 9000, 40300)
    assert tcp is not None and 536 <= mss_of(tcp) <= 1500 - 40
