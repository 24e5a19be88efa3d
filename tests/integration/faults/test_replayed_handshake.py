"""Fault: a message 1 that authenticates but that the server never saw (lost
on the path, captured before a restart, or replayed to a sibling server
within its freshness window) arrives from an attacker.

Before, such a message replaced the client's live session, allocated an
interface and an address, and ran the server's hooks with the attacker's
address. Now the server answers it (it cannot tell it from a genuine retry)
but sets nothing up until the sender proves it holds the session's keys
with its first authenticated datagram, which a replayer cannot produce; the
answered session is forgotten after the confirmation timeout.

The message is made here with the lab's secret, exactly as the client would
make it (a fresh ephemeral key and timestamp): to the server it is a
message 1 it never saw, which is what a captured and dropped one is.
"""

from __future__ import annotations

import socket
import time

import pytest

from kcpvpn._engine import testing
from kcpvpn_lab.topology import SERVER_ADDR
from kcpvpn_lab.vpn import SECRET, daemon_status, ping, start_client, start_server

from .conftest import PORT, SERVER_FLAGS, SERVER_IP, kvs, wait_for

pytestmark = pytest.mark.netns

CONFIRM_TIMEOUT_S = 10


def _unseen_message_1(client_id: str):
    psk = testing.stretch_secret(SECRET.encode())
    payload = {"client_id": client_id, "mtu": 1500, "cipher": "aes"}
    return testing.HandshakeInitiator(psk, payload, 0x5151, int(time.time() * 1000))


def _hook(path, out) -> None:
    path.write_text(f'#!/bin/sh\necho "$0 $KV_CLIENT_ID $KV_REMOTE_ADDR" >> {out}\n')
    path.chmod(0o700)


def test_a_replayed_unseen_message_1_changes_nothing(make_topology, tmp_path):
    topo = make_topology(clients=2)
    hooks, log = tmp_path / "hooks", tmp_path / "hooks.log"
    hooks.mkdir(mode=0o700)
    _hook(hooks / "on_connected", log)
    _hook(hooks / "on_disconnected", log)
    srv = start_server(topo.server, *SERVER_FLAGS, "--hook-dir", str(hooks))
    cli = start_client(topo.client(1), topo.server, "--client-id", "alice")
    ping(topo.client(1), SERVER_IP)
    assert wait_for(lambda: log.exists() and "alice" in log.read_text(), 10)
    before = daemon_status(srv)
    [alice] = before["clients"]
    hooks_before = log.read_text()
    links_before = kvs(topo.server)

    # The attacker sends from another host: once as alice (whose session it
    # would have replaced), once as a new client (which would have taken an
    # address from the pool), and replays each once more.
    attacker = topo.client(2)
    offered = {}
    for cid in ("alice", "mallory"):
        # One socket each: the server takes one address and port for one
        # client (a second message 1 from it would be that client again).
        s = attacker.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        ini = _unseen_message_1(cid)
        try:
            for attempt in range(2):
                s.sendto(ini.message, (str(SERVER_ADDR), PORT))
                try:
                    d, _ = s.recvfrom(2048)
                except TimeoutError:
                    continue
                if attempt == 1:
                    # The repeat is a replay: at most a hint (type 5) says so.
                    assert d[0] == 5, f"a replayed message 1 got a type {d[0]} answer"
                    continue
                assert d[0] == 2, f"message 1 got a type {d[0]} answer, not message 2"
                out = ini.read_response(d)
                assert out["accepted"], out
                offered[cid] = out["config"]["client_ip"]
        finally:
            s.close()
    # Alice's would-be successor shares her address; mallory's took one.
    assert offered["alice"] == alice["ip"]
    assert offered["mallory"] not in (None, alice["ip"])

    # Each repeat was refused (as a replay, or by the per-source limit before
    # any cryptography), and two answered sessions wait for confirmation.
    def refused(doc: dict) -> int:
        e = doc["endpoint"]
        return e["handshake_replayed"] + e["handshake_rate_limited"]

    assert wait_for(lambda: refused(daemon_status(srv)) >= refused(before) + 2, 3)
    assert daemon_status(srv)["unconfirmed"] == 2

    # Nothing changed: alice keeps her session, interface and address; no
    # interface was made, no address taken, no hook run.
    for _ in range(3):
        ping(topo.client(1), SERVER_IP)
    now = daemon_status(srv)
    assert [(c["session_id"], c["interface"], c["ip"]) for c in now["clients"]] == [
        (alice["session_id"], alice["interface"], alice["ip"])
    ]
    assert kvs(topo.server) == links_before
    time.sleep(1)  # a hook would have run by now
    assert log.read_text() == hooks_before

    # The answered sessions are forgotten after the confirmation timeout,
    # still without a hook, and alice is still there.
    assert wait_for(lambda: daemon_status(srv)["unconfirmed"] == 0, CONFIRM_TIMEOUT_S + 5)
    ping(topo.client(1), SERVER_IP)
    assert log.read_text() == hooks_before
    assert [c["session_id"] for c in daemon_status(srv)["clients"]] == [alice["session_id"]]
    # The pool got mallory's address back: the next client gets it.
    bob = start_client(topo.client(2), topo.server, "--client-id", "bob")
    ping(topo.client(2), SERVER_IP)
    ips = {c["client_id"]: c["ip"] for c in daemon_status(srv)["clients"]}
    assert ips == {"alice": alice["ip"], "bob": offered["mallory"]}
    assert srv.alive() and cli.alive() and bob.alive()
