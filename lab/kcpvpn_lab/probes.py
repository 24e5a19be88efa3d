"""Probes: put traffic through a path and check what came out.

Every socket is created inside the namespace of the host that uses it (see
`netns.py`), so probes run in the lab process with no helper processes except
`ping` and `iperf3`. scapy builds and parses packets; plain sockets move them.

- `udp_flow`: N numbered datagrams → how many arrived, duplicated, in order.
- `ping`: RTTs and percentiles (the system `ping`).
- `ip_probe` / `icmp_probe` / `udp_probe` / `tcp_probe`: one crafted packet sent
  on one side, captured on the other, compared field by field.
- `arp_probe`, `ether_probe`: ARP and raw Ethernet frames (for TAP bridging).
- `tcp_transfer`: bytes through a real TCP connection, compared by hash.
- `iperf3`: goodput of TCP or UDP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import iperf

if TYPE_CHECKING:
    import subprocess

    from .topology import Host

ETH_P_ALL = 0x0003
ETH_P_PROBE = 0x88B5  # IEEE 802 local experimental ethertype
ARPHRD_ETHER = 1
_MAGIC = b"KVLP"


def _token() -> bytes:
    return _MAGIC + os.urandom(8)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values: nothing arrived")
    s = sorted(values)
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


# --- UDP flow ----------------------------------------------------------------------------------


@dataclass
class FlowResult:
    sent: int
    received: int  # datagrams received, duplicates included
    unique: int
    duplicates: int
    late: int  # arrivals with a lower number than one already seen (reordering)
    order: list[int] = field(repr=False, default_factory=list)  # numbers in arrival order

    @property
    def lost(self) -> int:
        return self.sent - self.unique

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    @property
    def complete(self) -> bool:
        return self.unique == self.sent

    @property
    def in_order(self) -> bool:
        """Every datagram arrived exactly once, in the order sent."""
        return self.complete and self.duplicates == 0 and self.late == 0


def udp_flow(
    src: Host,
    dst: Host,
    dst_ip: str | None = None,
    count: int = 1000,
    size: int = 200,
    interval: float = 0.0005,
    port: int = 0,
    idle_timeout: float = 1.0,
    bind_ip: str = "0.0.0.0",
) -> FlowResult:
    """Send `count` numbered datagrams of `size` bytes from src to dst, one every
    `interval` seconds, and count what arrives (until `idle_timeout` of silence)."""
    if size < 16:
        raise ValueError("size must be at least 16 bytes (sequence number + run token)")
    target = dst_ip or str(dst.address)
    run = os.urandom(8)
    rx = dst.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = src.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        with contextlib.suppress(OSError):
            rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        rx.bind((bind_ip, port))
        port = rx.getsockname()[1]
        rx.setblocking(False)
        order: list[int] = []
        buf = bytearray(65536)

        def drain() -> None:
            while True:
                try:
                    n = rx.recv_into(buf)
                except BlockingIOError:
                    return
                if n >= 16 and buf[8:16] == run:
                    order.append(struct.unpack_from("!Q", buf)[0])

        pad = bytes(size - 16)
        t0 = time.monotonic()
        for i in range(count):
            due = t0 + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            tx.sendto(struct.pack("!Q", i) + run + pad, (target, port))
            drain()
        last = time.monotonic()
        while time.monotonic() - last < idle_timeout:
            before = len(order)
            select.select([rx], [], [], 0.05)
            drain()
            if len(order) != before:
                last = time.monotonic()
    seen: set[int] = set()
    dups = late = 0
    high = -1
    for n in order:
        if n in seen:
            dups += 1
            continue
        seen.add(n)
        if n < high:
            late += 1
        high = max(high, n)
    return FlowResult(count, len(order), len(seen), dups, late, order)


# --- ping --------------------------------------------------------------------------------------


@dataclass
class PingResult:
    sent: int
    rtts_ms: list[float]  # one per reply, in sequence order (duplicates dropped)
    output: str = field(default="", repr=False)  # ping's stdout and stderr, for diagnostics

    @property
    def received(self) -> int:
        return len(self.rtts_ms)

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0

    def p(self, pct: float) -> float:
        if not self.rtts_ms:
            raise ValueError(f"no ping reply arrived; ping said:\n{self.output}")
        return percentile(self.rtts_ms, pct)

    @property
    def median(self) -> float:
        return self.p(50)


_PING_LINE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


def ping(
    src: Host,
    dst_ip: str,
    count: int = 20,
    interval: float = 0.1,
    size: int = 56,
    wait: float = 2.0,
) -> PingResult:
    """`ping` from src; RTT per reply (replies marked DUP! are ignored)."""
    r = src.run(
        [
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            f"{interval:.3f}",
            "-s",
            str(size),
            "-W",
            f"{wait:g}",
            dst_ip,
        ],
        check=False,
        timeout=count * interval + wait + 30,
    )
    rtts: dict[int, float] = {}
    for line in r.stdout.splitlines():
        m = _PING_LINE.search(line)
        if m and "DUP!" not in line:
            rtts.setdefault(int(m.group(1)), float(m.group(2)))
    return PingResult(count, [rtts[k] for k in sorted(rtts)], r.stdout + r.stderr)


# --- capture and single-packet probes ------------------------------------------------------------


class Capture:
    """Frames seen on one interface of a host (AF_PACKET). Open it before sending."""

    def __init__(self, host: Host, ifname: str):
        self.host = host
        self.ifname = ifname
        self.sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
        self.sock.bind((ifname, ETH_P_ALL))

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def frames(self, timeout: float = 2.0) -> Iterator[tuple[bytes, bool]]:
        """Yield (bytes, is_ethernet) of incoming frames until `timeout` passes."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return
            data, addr = self.sock.recvfrom(65536)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            yield data, addr[3] == ARPHRD_ETHER

    def wait_for(self, match: Callable[[bytes], bool], timeout: float = 2.0) -> bytes | None:
        """The first incoming frame (or bare IP packet on a TUN) that `match` accepts."""
        for data, _ in self.frames(timeout):
            if match(data):
                return data
        return None

    def ip_packet(self, token: bytes, timeout: float = 2.0) -> Any:
        """The first IP packet carrying `token`, as a scapy IP packet (Ethernet stripped)."""
        from scapy.layers.inet import IP

        for data, is_eth in self.frames(timeout):
            if token in data:
                raw = data[14:] if is_eth else data
                return IP(raw)
        return None


@dataclass
class ProbeResult:
    sent: Any  # the scapy IP packet sent (complete headers: the kernel fills in nothing)
    received: Any | None
    differences: list[str]

    @property
    def arrived(self) -> bool:
        return self.received is not None

    @property
    def intact(self) -> bool:
        return self.arrived and not self.differences


def compare_ip(sent: Any, got: Any, ignore: Sequence[str] = ("ttl", "chksum")) -> list[str]:
    """Field-by-field differences between two scapy IP packets (layer by layer,
    payload compared as bytes). TTL and checksums change when routed: ignored by default."""
    diffs = []
    a, b = sent, got
    while a is not None and b is not None and a.name not in ("Raw", "Padding", "NoPayload"):
        if a.name != b.name:
            diffs.append(f"layer {a.name} became {b.name}")
            return diffs
        for f in a.fields_desc:
            if f.name in ignore or f.name in ("load",):
                continue
            va, vb = a.getfieldval(f.name), b.getfieldval(f.name)
            if va != vb:
                diffs.append(f"{a.name}.{f.name}: sent {va!r}, got {vb!r}")
        a, b = a.payload, b.payload
    pa = bytes(a) if a is not None else b""
    pb = bytes(b) if b is not None else b""
    if pb[: len(pa)] != pa or (len(pb) > len(pa) and any(pb[len(pa) :])):
        diffs.append(f"payload: sent {len(pa)} bytes, got {len(pb)} bytes that differ")
    return diffs


def send_ip(host: Host, packet: bytes, dst_ip: str) -> None:
    """Send a complete IPv4 packet (our own header) from `host`."""
    s = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with s:
        s.sendto(packet, (dst_ip, 0))


def ip_probe(
    src: Host, dst: Host, pkt: Any, capture_if: str = "eth0", timeout: float = 2.0
) -> ProbeResult:
    """Send scapy IP packet `pkt` (its payload must contain a token from `_token()`,
    which the helpers below add) from src and capture it on dst's `capture_if`."""
    raw = bytes(pkt)
    from scapy.layers.inet import IP

    sent = IP(raw)
    token = raw[-12:]
    if not token.startswith(_MAGIC):
        raise ValueError(
            "the probe's payload must end with a token from kcpvpn_lab.probes._token()"
        )
    with Capture(dst, capture_if) as cap:
        send_ip(src, raw, sent.dst)
        got = cap.ip_packet(token, timeout)
    return ProbeResult(sent, got, compare_ip(sent, got) if got is not None else ["nothing arrived"])


def _fill(size: int, header: int) -> bytes:
    """Payload so that the whole IP packet is `size` bytes, ending with a token."""
    token = _token()
    n = size - header - len(token)
    if n < 0:
        raise ValueError(f"size {size} is too small for this probe (minimum {header + len(token)})")
    return bytes((i * 31 + 7) & 0xFF for i in range(n)) + token


def icmp_probe(
    src: Host,
    dst: Host,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    size: int = 100,
    **kw: Any,
) -> ProbeResult:
    """An ICMP echo request of `size` bytes (IP header included)."""
    from scapy.layers.inet import ICMP, IP

    pkt = (
        IP(src=src_ip or str(src.address), dst=dst_ip or str(dst.address), id=0x4B56)
        / ICMP(id=0x1234, seq=1)
        / _fill(size, 28)
    )
    return ip_probe(src, dst, pkt, **kw)


def udp_probe(
    src: Host,
    dst: Host,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    size: int = 100,
    sport: int = 40000,
    dport: int = 40001,
    **kw: Any,
) -> ProbeResult:
    """A UDP datagram of `size` bytes (IP header included)."""
    from scapy.layers.inet import IP, UDP

    pkt = (
        IP(src=src_ip or str(src.address), dst=dst_ip or str(dst.address), id=0x4B57)
        / UDP(sport=sport, dport=dport)
        / _fill(size, 28)
    )
    return ip_probe(src, dst, pkt, **kw)


def tcp_probe(
    src: Host,
    dst: Host,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    size: int = 100,
    sport: int = 40002,
    dport: int = 40003,
    **kw: Any,
) -> ProbeResult:
    """A TCP segment (SYN with data) of `size` bytes (IP header included)."""
    from scapy.layers.inet import IP, TCP

    pkt = (
        IP(src=src_ip or str(src.address), dst=dst_ip or str(dst.address), id=0x4B58)
        / TCP(sport=sport, dport=dport, flags="S", seq=1000)
        / _fill(size, 40)
    )
    return ip_probe(src, dst, pkt, **kw)


# --- layer 2 --------------------------------------------------------------------------------------


def _l2_socket(host: Host, ifname: str) -> socket.socket:
    s = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, ETH_P_ALL))
    return s


def arp_probe(
    src: Host,
    ifname: str,
    target_ip: str,
    src_ip: str | None = None,
    timeout: float = 2.0,
    tries: int = 3,
) -> str | None:
    """ARP who-has `target_ip` out of src's `ifname`; the MAC that answered, or None."""
    from scapy.layers.l2 import ARP, Ether

    mac = src.mac(ifname)
    req = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
        op=1, hwsrc=mac, psrc=src_ip or "0.0.0.0", pdst=target_ip
    )
    with _l2_socket(src, ifname) as s:
        for _ in range(tries):
            s.send(bytes(req))
            deadline = time.monotonic() + timeout / tries
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                data, addr = s.recvfrom(65536)
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                f = Ether(data)
                if ARP in f and f[ARP].op == 2 and f[ARP].psrc == target_ip:
                    return f[ARP].hwsrc
    return None


@dataclass
class FrameResult:
    sent: bytes
    received: bytes | None

    @property
    def intact(self) -> bool:
        # Short frames may come back padded to the Ethernet minimum (60 bytes).
        r = self.received
        return r is not None and r[: len(self.sent)] == self.sent and not any(r[len(self.sent) :])


def ether_probe(
    src: Host,
    src_if: str,
    dst: Host,
    dst_if: str,
    dst_mac: str = "ff:ff:ff:ff:ff:ff",
    size: int = 100,
    timeout: float = 2.0,
) -> FrameResult:
    """A raw Ethernet frame (ethertype 0x88B5, `size` bytes with header) from src's
    `src_if` captured on dst's `dst_if`."""
    from scapy.layers.l2 import Ether

    token = _token()
    body = bytes((i * 13 + 1) & 0xFF for i in range(max(0, size - 14 - len(token)))) + token
    frame = bytes(Ether(dst=dst_mac, src=src.mac(src_if), type=ETH_P_PROBE) / body)
    with Capture(dst, dst_if) as cap, _l2_socket(src, src_if) as s:
        s.send(frame)
        got = cap.wait_for(lambda d: token in d, timeout)
    return FrameResult(frame, got)


# --- TCP and iperf3 -----------------------------------------------------------------------------


@dataclass
class TransferResult:
    nbytes: int
    received: int
    sent_sha256: str
    received_sha256: str
    seconds: float

    @property
    def intact(self) -> bool:
        return self.received == self.nbytes and self.sent_sha256 == self.received_sha256


def tcp_transfer(
    src: Host,
    dst: Host,
    dst_ip: str | None = None,
    nbytes: int = 1 << 20,
    port: int = 0,
    timeout: float = 30.0,
) -> TransferResult:
    """Send `nbytes` of pseudo-random data over one TCP connection src → dst and hash both ends."""
    data = hashlib.shake_256(os.urandom(16)).digest(nbytes) if nbytes else b""
    lsock = dst.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(1)
    lsock.settimeout(timeout)
    port = lsock.getsockname()[1]
    got = hashlib.sha256()
    count = [0]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(timeout)
                while chunk := conn.recv(1 << 16):
                    got.update(chunk)
                    count[0] += len(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        with src.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect((dst_ip or str(dst.address), port))
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            t.join(timeout)
    finally:
        lsock.close()
    return TransferResult(
        nbytes, count[0], hashlib.sha256(data).hexdigest(), got.hexdigest(), time.monotonic() - t0
    )


@dataclass
class IperfResult:
    bits_per_second: float  # at the receiver
    lost_percent: float  # UDP only
    retransmits: int  # TCP only
    raw: dict[str, Any] = field(repr=False)

    @property
    def mbit(self) -> float:
        return self.bits_per_second / 1e6


def iperf3_json(r: subprocess.CompletedProcess) -> dict:
    """iperf3 -J's report from a finished run; IperfError (with iperf3's own
    words) when it gave none or reports an error."""
    try:
        return iperf.report(r.stdout or "")
    except (iperf.IperfError, json.JSONDecodeError) as e:
        said = (r.stderr or "").strip()[-300:]
        raise iperf.IperfError(f"{e} (exit {r.returncode}) {said}") from None


def iperf3(
    src: Host,
    dst: Host,
    dst_ip: str | None = None,
    seconds: float = 3.0,
    udp: bool = False,
    rate: str | None = None,
    length: int | None = None,
    extra: Sequence[str] = (),
) -> IperfResult:
    """iperf3 from src (client) to dst (server); goodput as the receiver saw it."""
    server = dst.popen(["iperf3", "-s", "-1", "--forceflush"], name="iperf3-s")
    try:
        # Wait until the server listens (its log says so), bounded.
        server.wait_for_log("Server listening", timeout=5)
        argv = ["iperf3", "-c", dst_ip or str(dst.address), "-t", f"{seconds:g}", "-J", *extra]
        if udp:
            argv += ["-u", "-b", rate or "100M", "-w", "4M"]
        elif rate:
            argv += ["-b", rate]
        if length:
            argv += ["-l", str(length)]
        r = src.run(argv, check=False, timeout=seconds + 30)
    finally:
        server.stop(timeout=2)
    j = iperf3_json(r)
    end = j["end"]
    if udp:
        s = end["sum"]
        lost = float(s.get("lost_percent", 0.0))
        return IperfResult(s["bits_per_second"] * (1 - lost / 100), lost, 0, j)
    return IperfResult(
        end["sum_received"]["bits_per_second"], 0.0, int(end["sum_sent"].get("retransmits", 0)), j
    )


# --- the wire, recorded --------------------------------------------------------------------------


class WireRecord:
    """Every frame on one interface of a host, written to a pcap file by
    tcpdump (a process of the lab, stopped by PID). Read with `packets()`
    once stopped. For low rates: checksums are checked on whole frames, so
    nothing is cut (snaplen 0)."""

    def __init__(self, host: Host, ifname: str, name: str = "wire"):
        self.path = host.topo.run_dir / f"{host.name}.{name}.pcap"
        self.proc = host.popen(
            ["tcpdump", "-i", ifname, "-U", "-n", "-s", "0", "-w", str(self.path), "not arp"],
            name=f"tcpdump-{name}",
        )
        # tcpdump says "listening on" once its socket is open.
        if not self.proc.wait_for_log("listening on", timeout=5):
            raise RuntimeError(f"tcpdump did not start on {ifname}: {self.proc.log()}")

    def stop(self) -> None:
        self.proc.stop(timeout=3)

    def packets(self) -> list[Any]:
        """The IP packets recorded (scapy), Ethernet stripped."""
        # The IP layers must be loaded before dissection, or Ethernet's
        # payload stays raw bytes.
        import scapy.layers.inet
        import scapy.layers.inet6  # noqa: F401
        from scapy.layers.l2 import Ether
        from scapy.utils import rdpcap

        self.stop()
        return [f[Ether].payload for f in rdpcap(str(self.path)) if Ether in f]


@dataclass
class TcpWireCheck:
    """What a strict firewall would say about the fake-TCP flows recorded."""

    packets: int = 0
    non_tcp: list[str] = field(default_factory=list)
    resets: int = 0
    bad_checksums: int = 0
    # Per flow: the flags of its first five segments; sequence breaks.
    handshakes: dict[str, list[str]] = field(default_factory=dict)
    seq_breaks: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            not self.non_tcp
            and self.resets == 0
            and self.bad_checksums == 0
            and not self.seq_breaks
            and all(h[:3] == ["S", "SA", "A"] for h in self.handshakes.values())
        )


def _tcp_checksum_ok(pkt: bytes, ihl: int) -> bool:
    """RFC 793's checksum over the pseudo-header and segment of an IPv4 packet."""
    tcp = pkt[ihl:]
    data = pkt[12:20] + struct.pack("!BBH", 0, 6, len(tcp)) + tcp
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def check_tcp_wire(packets: Sequence[Any], port: int) -> TcpWireCheck:
    """Checks recorded IPv4 packets of fake-TCP flows to/from `port`: only
    TCP, each flow opening with SYN / SYN-ACK / ACK, sequence numbers
    continuous in each direction (each segment starts where the previous
    one ended; a keepalive probe one below), valid checksums, no reset."""
    from scapy.layers.inet import IP, TCP

    out = TcpWireCheck()
    next_seq: dict[tuple, int] = {}
    for p in packets:
        if IP not in p:
            out.non_tcp.append(p.summary())
            continue
        out.packets += 1
        ip = p[IP]
        if TCP not in ip:
            out.non_tcp.append(ip.summary())
            continue
        t = ip[TCP]
        if port not in (t.sport, t.dport):
            out.non_tcp.append(ip.summary())
            continue
        if not _tcp_checksum_ok(bytes(ip)[: ip.len], ip.ihl * 4):
            out.bad_checksums += 1
        flags = str(t.flags).replace("P", "")
        client = (ip.dst, t.dport) if t.sport == port else (ip.src, t.sport)
        flow = f"{client[0]}:{client[1]}"
        first = out.handshakes.setdefault(flow, [])
        if len(first) < 5:
            first.append(flags)
        if "R" in flags:
            out.resets += 1
        key = (ip.src, t.sport, ip.dst, t.dport)
        length = len(t.payload) + (1 if "S" in flags else 0)
        want = next_seq.get(key)
        if want is not None and t.seq != want:
            probe = length == 0 and t.seq == (want - 1) & 0xFFFFFFFF
            if not probe:
                out.seq_breaks.append(f"{flow}: seq {t.seq}, expected {want} ({ip.summary()})")
        if want is None or t.seq == want:
            next_seq[key] = (t.seq + length) & 0xFFFFFFFF
    return out
