"""Claim: in TUN mode, ICMP, UDP and TCP packets sent on one side arrive intact
on the other: payload, addresses, ports, IP id and flags, sizes from tiny up to
the tunnel's MTU. Each packet is crafted with scapy, sent from one host with a
raw socket and captured on the far side's TUN device (TTL and checksums are
not compared: forwarding changes them)."""

from __future__ import annotations

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import link_info, sessions_of, status_when

pytestmark = pytest.mark.netns

PROBES = {"icmp": probes.icmp_probe, "udp": probes.udp_probe, "tcp": probes.tcp_probe}


def _sizes(mtu: int) -> list[int]:
    # Smallest TCP probe (40-byte header + 12-byte token), a classic small
    # packet, the old Internet minimum, and exactly the MTU.
    return [52, 100, 576, mtu - 1, mtu]


@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_icmp_udp_tcp_arrive_intact_up_to_the_mtu(tun, direction):
    if direction == "client-to-server":
        src, dst, src_ip, dst_ip, cap = (
            tun.client_host,
            tun.server_host,
            tun.client_ip,
            tun.server_ip,
            "kvs0",
        )
    else:
        src, dst, src_ip, dst_ip, cap = (
            tun.server_host,
            tun.client_host,
            tun.server_ip,
            tun.client_ip,
            "kvc0",
        )
    mtu = link_info(dst, cap)["mtu"]
    assert mtu == link_info(src, "kvc0" if cap == "kvs0" else "kvs0")["mtu"] == 1500

    # Server session counters: packets_out = delivered to its TUN, packets_in = read from it.
    key = "packets_out" if cap == "kvs0" else "packets_in"
    before = sessions_of(status_when(tun.server_sock, sessions_of))[0][key]
    failures = []
    sent = 0
    for proto, probe in PROBES.items():
        for size in _sizes(mtu):
            r = probe(src, dst, src_ip=src_ip, dst_ip=dst_ip, size=size, capture_if=cap, timeout=3)
            sent += 1
            if not r.intact:
                failures.append(f"{proto} {size} bytes: {r.differences}")
            else:
                assert len(bytes(r.received)) == size, "a TUN carries the bare IP packet"
    assert not failures, "\n".join(failures)
    # The packets really went through the tunnel (the server's session counted them).
    status_when(tun.server_sock, lambda d: sessions_of(d)[0][key] - before >= sent)
