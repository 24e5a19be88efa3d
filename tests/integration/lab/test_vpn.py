"""The lab's daemon helpers (kcpvpn_lab.vpn) learn that a daemon is up, and its
address, from its status socket: not from its log, which is for people."""

from __future__ import annotations

import pytest

from kcpvpn_lab.vpn import (
    DaemonFailed,
    client_address,
    connected_since,
    daemon_status,
    ping,
    server_clients,
    start_client,
    start_server,
)

pytestmark = pytest.mark.netns

SERVER_FLAGS = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")


def test_ready_and_addressed_with_a_silent_log(topo):
    # --log-level error: no "listening on" / "connected to" lines to wait for.
    srv = start_server(topo.server, *SERVER_FLAGS, "--log-level", "error")
    assert daemon_status(srv)["mode"] == "server"
    cli = start_client(topo.client(1), topo.server, "--client-id", "quiet", "--log-level", "error")
    assert "connected" not in cli.log() and "listening" not in srv.log()
    doc = daemon_status(cli)
    assert (doc["state"], doc["pid"]) == ("connected", cli.pid)
    assert client_address(cli) == "192.168.88.2"
    assert connected_since(cli) == doc["since"]
    assert [(c["client_id"], c["ip"]) for c in server_clients(srv)] == [("quiet", "192.168.88.2")]
    ping(topo.client(1), "192.168.88.1", count=2, interval=0.1)  # connected: traffic flows


def test_a_daemon_that_exits_before_it_is_ready_raises_with_its_log(topo):
    with pytest.raises(DaemonFailed, match="(?s)exited .*before it was ready.*nosuch0"):
        start_server(topo.server, "--vni-mode", "tap", "--bridge", "nosuch0", timeout=20)
    start_server(topo.server, *SERVER_FLAGS)
    with pytest.raises(DaemonFailed, match="(?s)before it was ready.*authentication failed"):
        start_client(topo.client(1), topo.server, secret="not-the-servers-secret", timeout=40)


def test_a_client_that_never_connects_times_out_with_its_log(topo):
    # No server at all: the client keeps trying, the lab gives up after its timeout.
    with pytest.raises(DaemonFailed, match="(?s)not ready within 2 s.*its log:"):
        start_client(topo.client(1), topo.server, "--auto-reconnect", timeout=2)


def test_waiting_needs_the_status_socket(topo):
    with pytest.raises(ValueError, match="--status-socket none"):
        start_server(topo.server, "--status-socket", "none")
    assert not any(p.argv[0].endswith("kcpvpn") for p in topo.processes), "nothing was started"
