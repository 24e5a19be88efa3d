"""Issue 13 with real daemons in lab namespaces: the Prometheus endpoint,
the log lines, `kcpvpn status` at 80 columns, a stale status socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kcpvpn_lab.vpn import (
    kcpvpn_argv,
    ping,
    start_client,
    start_server,
    status_path,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_FLAGS = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")
SCRAPE = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def scrape(host, address: str) -> dict[str, list]:
    """GET /metrics from inside `host`'s namespace, parsed: {family: samples}."""
    r = host.run([sys.executable, "-c", SCRAPE, f"http://{address}/metrics"], timeout=30)
    return {f.name: f.samples for f in text_string_to_metric_families(r.stdout)}


def value(samples: list, **labels) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return found[0]


def status_text(path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="80", TERM="dumb")
    return subprocess.run(
        [*kcpvpn_argv(), "status", "--socket", path],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_metrics_logs_and_status(topo):
    srv = start_server(
        topo.server, *SERVER_FLAGS, "--metrics", "127.0.0.1:9477", "--log-level", "debug"
    )
    c = topo.client(1)
    cli = start_client(
        c,
        topo.server,
        "--client-id",
        "site-1",
        "--metrics",
        "127.0.0.1:9478",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    )
    ping(c, "192.168.88.1", count=5, size=1000)

    # Prometheus: per-session series labelled with client id and tunnel address.
    labels = {"client_id": "site-1", "tunnel_ip": "192.168.88.2"}
    m = {}

    def carried() -> bool:
        # The engine refreshes its figures every 250 ms: the last reply may lag.
        m.update(scrape(topo.server, "127.0.0.1:9477"))
        return all(
            value(m[f"kcpvpn_session_bytes_{way}"], **labels) >= 5 * 1028 for way in ("in", "out")
        )

    assert wait_until(carried, timeout=5), (m.get("kcpvpn_session_bytes_in"), labels)
    assert 0 < value(m["kcpvpn_session_kcp_srtt_seconds"], **labels) < 1
    assert value(m["kcpvpn_endpoint_handshake_requests"]) >= 1
    assert value(m["kcpvpn_sessions"]) == 1
    cm = {}

    def client_carried() -> bool:
        cm.update(scrape(c, "127.0.0.1:9478"))
        return value(cm["kcpvpn_session_bytes_in"], client_id="site-1", interface="kvc0") >= 5140

    assert wait_until(client_carried, timeout=5), cm.get("kcpvpn_session_bytes_in")
    assert value(cm["kcpvpn_connected"]) == 1

    # kcpvpn status, 80 columns.
    r = status_text(status_path(srv))
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    assert "site-1  192.168.88.2 on kvs0 from 10.77.0.11:" in r.stdout, r.stdout
    assert "1 client ·" in r.stdout and "RTT" in r.stdout

    assert cli.stop() == 0
    assert wait_until(lambda: "no clients" in status_text(status_path(srv)).stdout, timeout=10)
    assert srv.stop() == 0

    # Logs: one line per event, the library chatter of debug level left out.
    text = srv.log()
    for event in (
        "INFO kcpvpn: kcpvpn ",
        "INFO kcpvpn.metrics: serving Prometheus metrics on http://127.0.0.1:9477/metrics",
        "INFO kcpvpn.server: listening on ",
        "INFO kcpvpn.server: client site-1 connected from 10.77.0.11:",
        "INFO kcpvpn.server: client site-1 disconnected (closed by peer)",
        "INFO kcpvpn: stopped (exit status 0)",
    ):
        assert text.count(event) == 1, (event, text)
    assert text.splitlines()[-1].endswith("stopped (exit status 0)")
    assert "pyroute2" not in text and "asyncio" not in text and "selector" not in text, text
    records = [json.loads(line) for line in cli.log().splitlines()]
    messages = [r["message"] for r in records]
    assert any(msg.startswith("connected to 10.77.0.1:4000: interface kvc0") for msg in messages)
    assert messages[-1] == "stopped (exit status 0)" and records[-1]["level"] == "info"
    assert not any(r["logger"].startswith(("pyroute2", "asyncio")) for r in records)


def test_a_stale_status_socket_says_the_daemon_is_gone(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    path = status_path(srv)
    srv.send_signal(signal.SIGKILL)
    srv.wait(timeout=10)
    r = status_text(path)
    assert r.returncode == 1
    assert "the daemon that created it is gone" in r.stderr and f"rm {path}" in r.stderr, r.stderr


def test_a_taken_metrics_port_fails_the_start_with_its_reason(topo):
    start_server(topo.server, *SERVER_FLAGS, "--metrics", "127.0.0.1:9477")
    other = start_server(
        topo.server, *SERVER_FLAGS, "--metrics", "127.0.0.1:9477", port=4001, wait=False
    )
    assert other.wait(timeout=30) == 1
    assert "cannot serve metrics on 127.0.0.1:9477" in other.log(), other.log()
    assert "stopped (exit status 1)" in other.log()
