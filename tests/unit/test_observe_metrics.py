"""The Prometheus exporter: the status document as series, served over HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kcpvpn.config import parse_host_port
from kcpvpn.observe.metrics import Exporter, SnapshotCollector, families

SERVER_DOC = {
    "mode": "server",
    "pid": 10,
    "started": 1000.0,
    "listen": "[::]:4000",
    "vni_mode": "tun",
    "clients": [
        {
            "client_id": "site-1",
            "interface": "kvs0",
            "ip": "192.168.88.2",
            "ip_mode": 0,
            "remote": "10.77.0.11:5000",
            "since": 1001.0,
            "session_id": 77,
            "peer": ["10.77.0.11", 5000],
            "bytes_in": 1500,
            "bytes_out": 3000,
            "fec_parity": 1.63,
            "fec_loss_ppm": 50000,
            "kcp": {"srtt_ms": 41, "cwnd": 120, "retransmits": 7, "bandwidth_kbit": 2000},
        },
        {"client_id": "", "interface": "kvs1", "ip": "192.168.88.3", "since": 1002.0},
    ],
    "endpoint": {"datagrams_in": 90, "handshake_requests": 2, "send_errors": 1},
}


def scrape(doc: dict) -> dict[str, dict[tuple, float]]:
    """Exposition text of `doc`, parsed back: {sample name: {labels: value}}."""
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: doc))
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


SITE1 = (("client_id", "site-1"), ("interface", "kvs0"), ("tunnel_ip", "192.168.88.2"))


def test_session_series_carry_client_id_and_tunnel_address():
    m = scrape(SERVER_DOC)
    assert m["kcpvpn_session_bytes_in_total"][SITE1] == 1500
    assert m["kcpvpn_session_bytes_out_total"][SITE1] == 3000
    assert m["kcpvpn_session_kcp_retransmits_total"][SITE1] == 7
    assert m["kcpvpn_sessions"][()] == 2
    (info,) = m["kcpvpn_info"].items()
    assert dict(info[0])["mode"] == "server" and dict(info[0])["address"] == "[::]:4000"


def test_units_are_prometheus_base_units_and_gauges_are_gauges():
    fams = {f.name: f for f in families(SERVER_DOC)}
    assert fams["kcpvpn_session_kcp_srtt_seconds"].type == "gauge"
    assert fams["kcpvpn_session_kcp_srtt_seconds"].samples[0].value == pytest.approx(0.041)
    assert fams["kcpvpn_session_fec_loss_ratio"].samples[0].value == pytest.approx(0.05)
    assert fams["kcpvpn_session_kcp_bandwidth_bits_per_second"].samples[0].value == 2e6
    assert fams["kcpvpn_session_kcp_cwnd"].type == "gauge"
    assert fams["kcpvpn_session_fec_parity"].type == "gauge"
    assert fams["kcpvpn_session_bytes_in"].type == "counter"
    # Identity fields are labels or nothing, never series.
    assert not any("session_id" in n or "ip_mode" in n for n in fams)


def test_every_numeric_endpoint_field_is_a_counter_even_new_ones():
    doc = dict(
        SERVER_DOC,
        endpoint={
            "handshake_requests": 2,
            "send_errors_by_reason": {"no_buffer": 4, "unreachable": 1},
            "a_counter_the_engine_grows_later": 9,
            "label": "not a number",
        },
    )
    m = scrape(doc)
    assert m["kcpvpn_endpoint_handshake_requests_total"][()] == 2
    assert m["kcpvpn_endpoint_send_errors_by_reason_no_buffer_total"][()] == 4
    assert m["kcpvpn_endpoint_a_counter_the_engine_grows_later_total"][()] == 9
    assert not any("label" in n for n in m)


def test_client_document():
    doc = {
        "mode": "client",
        "started": 5.0,
        "server": "10.77.0.1:4000",
        "client_id": "c1",
        "state": "connected",
        "interface": "kvc0",
        "ip": "192.168.88.2",
        "since": 6.0,
        "sessions": [{"session_id": 1, "bytes_in": 10, "kcp": {"srtt_ms": 3}}],
        "endpoint": {},
    }
    m = scrape(doc)
    labels = (("client_id", "c1"), ("interface", "kvc0"), ("tunnel_ip", "192.168.88.2"))
    assert m["kcpvpn_connected"][()] == 1
    assert m["kcpvpn_session_bytes_in_total"][labels] == 10
    assert m["kcpvpn_session_start_time_seconds"][labels] == 6.0
    m = scrape(dict(doc, state="connecting", sessions=[]))
    assert m["kcpvpn_connected"][()] == 0 and m["kcpvpn_sessions"][()] == 0


def test_a_snapshot_racing_a_new_client_is_retried():
    calls = []

    def snapshot():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return SERVER_DOC

    assert any(f.name == "kcpvpn_sessions" for f in SnapshotCollector(snapshot).collect())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exporter_serves_the_snapshot_over_http():
    port = _free_port()
    ex = Exporter(f"127.0.0.1:{port}")
    try:
        ex.attach(lambda: SERVER_DOC)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        ex.close()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"kcpvpn_session_bytes_in", "kcpvpn_endpoint_handshake_requests"} <= names


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match="cannot serve metrics on .*choose another --metrics"):
            Exporter(f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    "text,want",
    [
        ("127.0.0.1:9477", ("127.0.0.1", 9477)),
        ("[::1]:9477", ("::1", 9477)),
        (":9477", ("", 9477)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_host_port(text, want):
    assert parse_host_port(text) == want


@pytest.mark.parametrize(
    "text,why",
    [
        ("9477", "no port"),
        ("127.0.0.1", "no port"),
        ("127.0.0.1:0", "out of range"),
        ("::1:9477", "brackets"),
        ("[nope]:9477", "not an IPv6"),
        ("bad_host!:1", "not a host name"),
    ],
)
def test_bad_host_port(text, why):
    with pytest.raises(ValueError, match=why):
        parse_host_port(text)
