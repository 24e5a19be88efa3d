"""A handshake flood: message 1s (well formed, under another secret, so each
one read costs the server a Diffie-Hellman) sent as fast as one process can,
from one real source or from spoofed ones. For the fault suite and for
measuring what a server survives.

    python -m kcpvpn_lab.flood --ifname eth0 --dst 10.77.0.1 --dst-mac ... \\
        --src 10.77.0.11 --src-mac ... --seconds 10 [--spoof]

Prints one JSON line: {"sent": N, "seconds": S, "rate": N/S}.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SOURCES = 4096  # distinct spoofed sources cycled through


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _frame(
    src_mac: bytes, dst_mac: bytes, src: str, dst: str, sport: int, dport: int, data: bytes
) -> bytes:
    udp_len = 8 + len(data)
    total = 20 + udp_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    # UDP checksum 0 (none), valid for IPv4.
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0)
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + udp + data


def message_1(secret: bytes = b"not the server's secret") -> bytes:
    """A well-formed message 1 that fails authentication at the server."""
    from kcpvpn._engine import testing

    psk = testing.stretch_secret(secret)
    return testing.HandshakeInitiator(psk, {"mtu": 1500}, 0x5EED, int(time.time() * 1000)).message


def frames(args: argparse.Namespace, m1: bytes) -> list[bytes]:
    src_mac = bytes.fromhex(args.src_mac.replace(":", ""))
    dst_mac = bytes.fromhex(args.dst_mac.replace(":", ""))
    if not args.spoof:
        return [_frame(src_mac, dst_mac, args.src, args.dst, 40000, args.port, m1)]
    out = []
    for i in range(SOURCES):
        # 198.18.0.0/15 (benchmarking): sources no real peer has.
        src = f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        out.append(_frame(src_mac, dst_mac, src, args.dst, 1024 + i, args.port, m1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dst-mac", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--src-mac", required=True)
    ap.add_argument("--port", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument(
        "--rate", type=float, default=0.0, help="datagrams per second (0: as fast as possible)"
    )
    ap.add_argument("--spoof", action="store_true", help="a different spoofed source per datagram")
    args = ap.parse_args()
    fs = frames(args, message_1())
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((args.ifname, ETH_P_ALL))
    sent = 0
    t0 = time.monotonic()
    end = t0 + args.seconds
    gap = 1.0 / args.rate if args.rate > 0 else 0.0
    n = len(fs)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for _ in range(64):
            try:
                s.send(fs[sent % n])
                sent += 1
            except OSError:  # the device queue is full: a flood can't do better
                break
        if gap:
            wait = t0 + sent * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    took = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": round(took, 3), "rate": round(sent / took)}))


if __name__ == "__main__":
    main()
