"""Issue 5: a peer that vanishes without a goodbye (SIGKILL) is noticed within a
few keepalive intervals, and everything its session held is released."""

from __future__ import annotations

import signal

import pytest

from kcpvpn_lab.vpn import (
    client_address,
    ping,
    start_client,
    start_server,
    wait_exit,
    wait_until,
)

pytestmark = pytest.mark.netns

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.2-192.168.88.2")


def test_killed_client_is_noticed_and_its_address_released(make_topology, tmp_path):
    hooks, out = tmp_path / "hooks", tmp_path / "gone"
    hooks.mkdir(mode=0o700)
    (hooks / "on_disconnected").write_text(f'#!/bin/sh\necho "$KV_CLIENT_IP" > "{out}"\n')
    (hooks / "on_disconnected").chmod(0o700)
    topo = make_topology(clients=2)
    # A one-address pool: the second client can only connect once the first
    # client's address has been released.
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1", "--hook-dir", str(hooks))
    victim = start_client(topo.client(1), topo.server, "--keepalive", "1")
    assert client_address(victim) == "192.168.88.2"
    ping(topo.client(1), SERVER_IP)
    assert "kvs0" in topo.server.links()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=5)
    # 3 keepalive periods (+1 s) of silence, checked on the session's timer.
    assert wait_until(lambda: "released kvs0 and 192.168.88.2" in srv.log(), 10), srv.log()
    assert "kvs0" not in topo.server.links()
    assert wait_until(out.exists, 5) and out.read_text().strip() == "192.168.88.2"
    nxt = start_client(topo.client(2), topo.server, "--keepalive", "1")
    assert client_address(nxt) == "192.168.88.2"
    ping(topo.client(2), SERVER_IP)


def test_client_notices_a_killed_server(make_topology):
    topo = make_topology(clients=1)
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1")
    cli = start_client(topo.client(1), topo.server, "--keepalive", "1")
    ping(topo.client(1), SERVER_IP)
    srv.send_signal(signal.SIGKILL)
    assert wait_exit(cli, timeout=15) != 0
    assert "session ended" in cli.log(), cli.log()
    assert "kvc0" not in topo.client(1).links()
