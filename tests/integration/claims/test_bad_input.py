"""Claim: bad input from outside — garbage, truncated, forged and replayed
datagrams sent at the server's UDP port — is dropped and counted, and nothing
else changes: no packet reaches the server's TUN, no session or interface is
created, the client's session keeps its address, and the tunnel still works.

The real client's datagrams are captured on the server's eth0 (its handshake
and some pings); the attacker then re-sends them, whole or altered, as raw
Ethernet frames from the client's own address and port (an on-path attacker
who can spoof), and sends garbage from a fresh UDP socket. Each kind lands in
its own counter of the server's status document, and each count is exact.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.vpn import (
    STATUS_PERIOD,
    client_address,
    connected_since,
    ping,
    read_status,
    sessions_of,
    start_client,
    start_server,
    status_socket,
    status_when,
    wait_reachable,
)

pytestmark = pytest.mark.netns

PORT = 4000
TAG = 16  # AES-256-GCM tag (the default cipher)
HEADER = 16  # type, reserved, receiver session id, counter


def _udp_payloads(frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(frame, UDP payload) of captured IPv4/UDP frames to PORT."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    out = []
    for f in frames:
        pkt = Ether(f)
        if IP in pkt and UDP in pkt and pkt[UDP].dport == PORT:
            out.append((f, bytes(pkt[UDP].payload)))
    return out


def _with_payload(frame: bytes, payload: bytes) -> bytes:
    """The captured frame (same MACs, addresses, ports) carrying another UDP payload."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    pkt[UDP].remove_payload()
    pkt[UDP].add_payload(payload)
    del pkt[IP].len, pkt[IP].chksum, pkt[UDP].len, pkt[UDP].chksum
    return bytes(pkt)


def _forge(data: bytes, counter: int, flip: int | None = None, mtype: int = 3) -> bytes:
    """A data datagram with a new (unused) counter, optionally one ciphertext byte flipped."""
    d = bytearray(data)
    d[0] = mtype
    struct.pack_into("<Q", d, 8, counter)
    if flip is not None:
        d[flip] ^= 0x01
    return bytes(d)


def test_garbage_truncated_forged_and_replayed_datagrams_are_counted_drops(topo):
    srv_host, c1 = topo.server, topo.client(1)
    sock = status_socket(srv_host, "server")
    srv = start_server(
        srv_host,
        "--local-ip",
        "192.168.88.1",
        "--assignable-ips",
        "192.168.88.0/24",
        "--status-socket",
        sock,
    )
    with probes.Capture(srv_host, "eth0") as cap:
        cli = start_client(c1, srv_host)
        since0 = connected_since(cli)
        wait_reachable(c1, "192.168.88.1")
        ping(c1, "192.168.88.1", count=5, interval=0.05)
        captured = _udp_payloads([f for f, _ in cap.frames(timeout=0.5)])
    inits = [(f, p) for f, p in captured if p[0] == 1]
    datas = [(f, p) for f, p in captured if p[0] == 3 and len(p) > HEADER + TAG]
    assert inits and len(datas) >= 10, f"captured {len(inits)} inits, {len(datas)} data"
    frame0, data0 = datas[-1]
    sid = data0[4:8]
    top_counter = max(struct.unpack_from("<Q", p, 8)[0] for _, p in datas)

    doc0 = status_when(sock, lambda d: sessions_of(d) and sessions_of(d)[0]["packets_out"] >= 5)
    sess0 = sessions_of(doc0)[0]
    links0 = srv_host.links()
    c1_port = int(sess0["remote"].rsplit(":", 1)[1])

    # --- the attack ---------------------------------------------------------------------------
    expect_endpoint = {
        "malformed": 0,
        "unknown_session": 0,
        "handshake_failures": 0,
        "handshake_replayed": 0,
    }
    expect_session = {"malformed": 0, "auth_failures": 0, "replays": 0}
    raw_frames: list[bytes] = []  # spoofed: the client's own address and port
    from_socket: list[bytes] = []  # a fresh UDP socket on the client host

    # Garbage: unknown types (and an empty datagram), random ids, random "handshakes".
    for first in (0, 2, 5, 0x7F, 0xFF):
        from_socket.append(bytes([first]) + os.urandom(60))
    from_socket.append(b"")
    expect_endpoint["malformed"] += 6
    for _ in range(5):
        other = os.urandom(4)
        while other == sid:
            other = os.urandom(4)
        from_socket.append(b"\x03\x00\x00\x00" + other + os.urandom(120))
    expect_endpoint["unknown_session"] += 5
    # Too short to be a message 1: garbage, counted and never answered.
    for n in (8, 50, 200):
        from_socket.append(b"\x01\x00\x00\x00" + os.urandom(n))
    expect_endpoint["malformed"] += 3

    # Truncated real datagrams: shorter than the header, then shorter than header + tag.
    raw_frames.append(_with_payload(frame0, data0[:10]))
    expect_endpoint["malformed"] += 1
    for n in (HEADER, HEADER + 4, HEADER + TAG - 1):
        raw_frames.append(_with_payload(frame0, data0[:n]))
    expect_session["malformed"] += 3

    # Forged: fresh counters (never used), header or ciphertext altered, random
    # ciphertext, and a forged close: the tag does not verify.
    big = top_counter + 100_000
    raw_frames.append(_with_payload(frame0, _forge(data0, big)))
    raw_frames.append(_with_payload(frame0, _forge(data0, big + 1, flip=HEADER + 3)))
    raw_frames.append(
        _with_payload(frame0, data0[:8] + struct.pack("<Q", big + 2) + os.urandom(100))
    )
    raw_frames.append(_with_payload(frame0, _forge(data0[: HEADER + TAG], big + 3, mtype=4)))
    expect_session["auth_failures"] += 4

    # Replayed: real datagrams again, whole, from the client's address and from another port.
    for f, _ in datas[-5:]:
        raw_frames.append(f)
    for _, p in datas[-3:]:
        from_socket.append(p)
    expect_session["replays"] += 8
    # ... and the client's handshake message 1.
    raw_frames.append(inits[0][0])
    expect_endpoint["handshake_failures"] += 1
    expect_endpoint["handshake_replayed"] += 1

    with probes.Capture(srv_host, "kvs0") as tun_cap:
        with probes._l2_socket(c1, "eth0") as l2:
            for f in raw_frames:
                l2.send(f)
                time.sleep(0.002)
        with c1.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in from_socket:
                s.sendto(p, (str(srv_host.address), PORT))
                time.sleep(0.002)

        # --- what the server counted --------------------------------------------------------
        def reached(d: dict) -> bool:
            e, s = d["endpoint"], sessions_of(d)[0]
            return all(e[k] - doc0["endpoint"][k] >= v for k, v in expect_endpoint.items()) and all(
                s[k] - sess0[k] >= v for k, v in expect_session.items()
            )

        status_when(sock, reached, timeout=10)
        time.sleep(2 * STATUS_PERIOD)  # nothing more is still on its way
        doc1 = read_status(sock)
        leaked = list(tun_cap.frames(timeout=0.2))

    e0, e1 = doc0["endpoint"], doc1["endpoint"]
    got_endpoint = {k: e1[k] - e0[k] for k in expect_endpoint}
    assert got_endpoint == expect_endpoint
    (sess1,) = sessions_of(doc1)
    got_session = {k: sess1[k] - sess0[k] for k in expect_session}
    assert got_session == expect_session

    # Nothing else changed: no packet delivered, no new session, interface or address.
    assert leaked == [], f"{len(leaked)} packets reached the server's TUN"
    assert sess1["packets_out"] == sess0["packets_out"]
    assert sess1["session_id"] == sess0["session_id"]
    assert sess1["remote"] == sess0["remote"] == f"{c1.address}:{c1_port}"
    assert e1["handshake_requests"] == e0["handshake_requests"], "a replayed handshake was taken"
    assert srv_host.links() == links0
    assert len(doc1["clients"]) == 1
    assert "moved to" not in srv.log()
    assert srv.alive() and cli.alive()
    assert client_address(cli) == "192.168.88.2" and connected_since(cli) == since0

    # ... and the tunnel still works, both ways, on the same session.
    ping(c1, "192.168.88.1", count=3, interval=0.05)
    ping(srv_host, "192.168.88.2", count=3, interval=0.05)
    after = sessions_of(
        status_when(sock, lambda d: sessions_of(d)[0]["packets_out"] >= sess0["packets_out"] + 6)
    )
    assert after[0]["session_id"] == sess0["session_id"]
