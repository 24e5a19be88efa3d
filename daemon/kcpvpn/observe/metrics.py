"""`--metrics HOST:PORT`: the daemon's status document as Prometheus metrics.

Each scrape calls the daemon's snapshot (the callable behind the status
socket) and turns the document into series, generically: every numeric field
of a session becomes `kcpvpn_session_<field>` labelled with the client id,
tunnel address and interface, and every numeric field of `endpoint` becomes
`kcpvpn_endpoint_<field>_total`. A counter the engine grows later shows up
without a change here. Naming follows Prometheus conventions: `_ms` fields
are exported in seconds, `_ppm` as a ratio, `_kbit` in bits per second, and
monotonic counters end in `_total`.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler

from .. import __version__
from ..config import parse_host_port
from .figures import rows

log = logging.getLogger("kcpvpn.metrics")

# Session fields that go up and down (everything else numeric is a counter).
GAUGES = frozenset(
    {"cwnd", "rmt_wnd", "snd_queue", "snd_inflight", "rcv_queue", "rcv_buf", "fec_parity"}
)
# Fields that identify or describe a session rather than measure it.
NOT_MEASURES = frozenset({"session_id", "ip_mode", "since"})

# suffix -> (exported suffix, scale): base units, as Prometheus wants them.
UNITS = {
    "_ms": ("_seconds", 1e-3),
    "_ppm": ("_ratio", 1e-6),
    "_kbit": ("_bits_per_second", 1e3),
}

HELP = {
    "start_time_seconds": "When the session started (Unix time)",
    # The engine counts from the interface's side: "in" enters the tunnel.
    "bytes_in": "Bytes read from the interface into the tunnel (sent to the peer)",
    "bytes_out": "Bytes the tunnel delivered to the interface (received from the peer)",
    "wire_bytes_in": "UDP payload bytes received for this session",
    "wire_bytes_out": "UDP payload bytes sent for this session",
    "fec_recovered": "Datagrams rebuilt by FEC without a retransmission",
    "fec_parity": "Parity shards per full FEC group the sender currently adds (average)",
    "small_groups": "Full FEC groups of small datagrams (ACKs) given parity for 1% failure",
    "fec_loss": "Loss estimate adaptive FEC follows (smoothed, from a cautious prior)",
    "loss": "Loss of our datagrams the peer measured in the last 5-10 s",
    "kcp_srtt": "KCP smoothed round-trip time",
    "kcp_retransmits": "KCP segments resent after a timeout",
    "kcp_fast_retransmits": "KCP segments resent after duplicate ACKs",
    "kcp_unneeded_retransmits": "KCP segments resent although the peer had an earlier copy",
    "auth_failures": "Datagrams that failed authentication",
    "handshake_requests": "Handshake initiations received",
    "handshake_failures": "Handshakes refused or failed",
    "send_errors": "UDP sends that failed",
}

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _series(key: str) -> tuple[str, float, bool]:
    """(exported name, scale, is_gauge) of a status field name."""
    name = _NAME_RE.sub("_", key)
    for suffix, (unit, scale) in UNITS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + unit, scale, True
    return name, 1.0, any(name == g or name.endswith("_" + g) for g in GAUGES)


def _help(prefix: str, key: str) -> str:
    base = key
    for suffix in UNITS:
        base = base.removesuffix(suffix)
    return HELP.get(base) or f"status document field {prefix}.{key}"


def _numbers(d: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(flattened key, value) of every number in `d`, nested dicts included
    (`{"kcp": {"srtt_ms": 40}}` -> `kcp_srtt_ms`)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _numbers(v, key + "_")
        elif isinstance(v, int | float) and k not in NOT_MEASURES:
            yield key, float(v)


class _Families:
    """Metric families by name, created on first use."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(
        self, prefix: str, key: str, value: float, labels: dict[str, str], gauge: bool | None = None
    ) -> None:
        name, scale, is_gauge = _series(key)
        if gauge is not None:
            is_gauge = gauge
        full = f"kcpvpn_{prefix}_{name}"
        fam = self.by_name.get(full)
        if fam is None:
            cls = GaugeMetricFamily if is_gauge else CounterMetricFamily
            fam = cls(full, _help(prefix, key), labels=list(labels))
            self.by_name[full] = fam
        fam.add_metric(list(labels.values()), value * scale)


def families(doc: dict) -> list[Metric]:
    """The metric families of one status document (pure: used by the
    collector and by the tests)."""
    out: list[Metric] = []
    mode = doc.get("mode", "")
    address = doc.get("listen") if mode == "server" else doc.get("server")
    info = GaugeMetricFamily(
        "kcpvpn_info", "The daemon: mode, address, version", labels=["mode", "address", "version"]
    )
    info.add_metric([mode, str(address or ""), __version__], 1)
    out.append(info)
    if "started" in doc:
        out.append(
            GaugeMetricFamily(
                "kcpvpn_start_time_seconds", "When the daemon started (Unix time)", doc["started"]
            )
        )
    if mode != "server":
        out.append(
            GaugeMetricFamily(
                "kcpvpn_connected",
                "1 while the client has a session with the server",
                1 if doc.get("state") == "connected" else 0,
            )
        )
    found = rows(doc)
    out.append(GaugeMetricFamily("kcpvpn_sessions", "Sessions the daemon holds", len(found)))
    fams = _Families()
    seen: set[tuple[str, ...]] = set()
    for row in found:
        labels = {"client_id": row.client_id, "tunnel_ip": row.address, "interface": row.interface}
        key = tuple(labels.values())
        if key in seen:
            continue  # one series per label set; the status socket shows the rest
        seen.add(key)
        s = row.session
        if s.get("since"):
            fams.add("session", "start_time_seconds", s["since"], labels, gauge=True)
        for k, v in _numbers(s):
            fams.add("session", k, v, labels)
    for k, v in _numbers(doc.get("endpoint") or {}):
        # The endpoint's figures are counters by contract.
        fams.add("endpoint", k, v, {}, gauge=False)
    out.extend(fams.by_name.values())
    return out


class SnapshotCollector:
    """A prometheus_client collector over a snapshot callable."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        # The snapshot runs on the scrape's thread while the daemon's loop may
        # add or drop a client: a dict changing size mid-copy raises
        # RuntimeError; the next try sees a settled state.
        for attempt in range(3):
            try:
                doc = self.snapshot()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield from families(doc)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class Exporter:
    """The HTTP endpoint: bound at once (so a taken port fails the start
    before anything else is set up), answering scrapes on its own thread."""

    def __init__(self, address: str) -> None:
        host, port = parse_host_port(address)
        if host == "":
            family, bind_host = socket.AF_INET6, "::"
        else:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            except socket.gaierror as e:
                raise OSError(f"--metrics {address}: cannot resolve {host!r}: {e.strerror}") from e
            family, bind_host = info[0], str(info[4][0])
        self.registry = CollectorRegistry(auto_describe=False)
        handler = MetricsHandler.factory(self.registry)
        server_cls = type("_Bound", (_Server,), {"address_family": family})
        try:
            self.httpd = server_cls((bind_host, port), handler, bind_and_activate=False)
            if family == socket.AF_INET6:
                # "::" from ":PORT" means both families, as for the UDP port.
                self.httpd.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.httpd.server_bind()
            self.httpd.server_activate()
        except OSError as e:
            self.httpd.server_close()
            hint = (
                "another program has the port? choose another --metrics"
                if e.errno == errno.EADDRINUSE
                else "is that address one of this host's? choose another --metrics"
            )
            raise OSError(f"cannot serve metrics on {address}: {e.strerror} ({hint})") from None
        self.address = address
        self._collector: SnapshotCollector | None = None
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="kcpvpn-metrics", daemon=True
        )
        self._thread.start()
        log.info("serving Prometheus metrics on http://%s/metrics", address)

    def attach(self, snapshot: Callable[[], dict]) -> None:
        """Scrapes answer with `snapshot()`'s figures from now on."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = SnapshotCollector(snapshot)
        self.registry.register(self._collector)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# The exporter of this process: started by the CLI before the daemon sets
# anything up, fed the daemon's snapshot when its status is opened.
_exporter: Exporter | None = None


def start(address: str) -> Exporter:
    global _exporter
    _exporter = Exporter(address)
    return _exporter


def attach(snapshot: Callable[[], dict]) -> None:
    """Feeds the process's exporter (if --metrics started one)."""
    if _exporter is not None:
        _exporter.attach(snapshot)


def stop() -> None:
    global _exporter
    if _exporter is not None:
        _exporter.close()
        _exporter = None
