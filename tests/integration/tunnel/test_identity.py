"""Issue "Keys that hold up": identity mode (static keys, the server's list of
peers) and the stronger simple mode (per-network salt, weak secrets refused),
with real daemons in namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kcpvpn import _engine
from kcpvpn.keys import encode_key
from kcpvpn_lab.vpn import (
    client_address,
    daemon_status,
    ping,
    server_clients,
    start_client,
    start_server,
    wait_until,
)

pytestmark = pytest.mark.netns

POOL = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")


class Key:
    """A key pair with its private half in a file of the run (mode 600)."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.private = _engine.generate_private_key()
        self.public = encode_key(_engine.public_key(self.private))
        self.path = run_dir / f"{name}.key"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(encode_key(self.private) + "\n")


def peers_file(run_dir: Path, *entries: tuple[Key, str, str | None]) -> Path:
    text = ""
    for key, cid, addr in entries:
        text += f'[[peer]]\npublic-key = "{key.public}"\nclient-id = "{cid}"\n'
        if addr:
            text += f'address = "{addr}"\n'
    p = run_dir / "peers.toml"
    p.write_text(text)
    return p


def identity_server(topo, server: Key, peers: Path, *flags: str):
    return start_server(
        topo.server,
        *POOL,
        "--private-key-file",
        str(server.path),
        "--peers-file",
        str(peers),
        *flags,
    )


def identity_client(topo, n: int, key: Key, server_public: str, *flags: str, **kw):
    return start_client(
        topo.client(n),
        topo.server,
        "--private-key-file",
        str(key.path),
        "--server-public-key",
        server_public,
        *flags,
        **kw,
    )


def kvs_links(host) -> list[str]:
    return [n for n in host.links() if n.startswith("kvs")]


def test_two_peers_get_their_addresses_and_ids_whatever_they_ask(make_topology):
    topo = make_topology(clients=2)
    run = topo.run_dir
    srv_key, alice, bob = Key(run, "server"), Key(run, "alice"), Key(run, "bob")
    peers = peers_file(run, (alice, "alice", "192.168.88.10"), (bob, "bob", "192.168.88.20"))
    srv = identity_server(topo, srv_key, peers)
    a = identity_client(topo, 1, alice, srv_key.public)
    # Bob claims alice's id and address: the peer entry decides both.
    b = identity_client(
        topo, 2, bob, srv_key.public, "--client-id", "alice", "--local-ip", "192.168.88.10"
    )
    assert client_address(a) == "192.168.88.10"
    assert client_address(b) == "192.168.88.20"
    ping(topo.client(1), "192.168.88.1")
    ping(topo.client(2), "192.168.88.1")
    ping(topo.server, "192.168.88.10")
    ping(topo.server, "192.168.88.20")
    clients = {c["client_id"]: c["ip"] for c in server_clients(srv)}
    assert clients == {"alice": "192.168.88.10", "bob": "192.168.88.20"}, clients
    assert a.alive() and b.alive()


def test_unknown_key_is_refused_and_gets_nothing(make_topology):
    topo = make_topology(clients=1)
    run = topo.run_dir
    srv_key, alice, mallory = Key(run, "server"), Key(run, "alice"), Key(run, "mallory")
    srv = identity_server(topo, srv_key, peers_file(run, (alice, "alice", "192.168.88.10")))
    cli = identity_client(topo, 1, mallory, srv_key.public, wait=False)
    assert cli.wait(timeout=30) != 0
    log = cli.log()
    assert "does not know this client's key" in log and mallory.public in log, log
    assert srv.alive()
    assert server_clients(srv) == []
    assert kvs_links(topo.server) == [], "an interface for a client that was refused"
    assert "unknown client key" in srv.log(), srv.log()
    # The counters are a snapshot the data path refreshes every 250 ms.
    assert wait_until(lambda: daemon_status(srv)["endpoint"]["handshake_auth_failures"] >= 1, 5), (
        daemon_status(srv)["endpoint"]
    )
    assert daemon_status(srv)["endpoint"]["handshake_requests"] == 0


def test_client_pinning_the_wrong_server_key_refuses_to_connect(make_topology):
    topo = make_topology(clients=1)
    run = topo.run_dir
    srv_key, alice, impostor = Key(run, "server"), Key(run, "alice"), Key(run, "impostor")
    srv = identity_server(topo, srv_key, peers_file(run, (alice, "alice", None)))
    cli = identity_client(topo, 1, alice, impostor.public, wait=False)
    assert cli.wait(timeout=30) != 0
    log = cli.log()
    assert "the handshake cannot complete" in log and "--server-public-key" in log, log
    assert server_clients(srv) == [] and kvs_links(topo.server) == []


def test_weak_secret_is_refused_unless_allowed(make_topology):
    topo = make_topology(clients=1)
    srv = start_server(topo.server, *POOL, secret="hunter2", wait=False)
    assert srv.wait(timeout=30) == 2
    assert "the secret is weak" in srv.log() and "kcpvpn genkey" in srv.log(), srv.log()
    start_server(topo.server, *POOL, "--allow-weak-key", secret="hunter2")
    cli = start_client(topo.client(1), topo.server, "--allow-weak-key", secret="hunter2")
    ping(topo.client(1), "192.168.88.1")
    assert "the secret is weak" in cli.log()  # still a warning


def test_different_network_names_do_not_interoperate(make_topology):
    topo = make_topology(clients=1)
    srv = start_server(topo.server, *POOL, "--network", "vpn.example.com")
    cli = start_client(topo.client(1), topo.server, "--network", "vpn.example.org", wait=False)
    assert cli.wait(timeout=30) != 0
    assert "authentication failed" in cli.log() and "--network" in cli.log(), cli.log()
    assert server_clients(srv) == [] and kvs_links(topo.server) == []
    start_client(topo.client(1), topo.server, "--network", "vpn.example.com")
    ping(topo.client(1), "192.168.88.1")


def test_sighup_revokes_a_removed_peer_and_keeps_the_others(make_topology):
    import signal

    topo = make_topology(clients=2)
    run = topo.run_dir
    srv_key, alice, bob = Key(run, "server"), Key(run, "alice"), Key(run, "bob")
    peers = peers_file(run, (alice, "alice", "192.168.88.10"), (bob, "bob", None))
    srv = identity_server(topo, srv_key, peers)
    a = identity_client(topo, 1, alice, srv_key.public)
    b = identity_client(topo, 2, bob, srv_key.public)
    ping(topo.client(2), "192.168.88.1")
    # Bob's key goes from the list: his session ends at once, alice's stays.
    peers_file(run, (alice, "alice", "192.168.88.10"))
    srv.send_signal(signal.SIGHUP)
    assert wait_until(lambda: [c["client_id"] for c in server_clients(srv)] == ["alice"], 10), (
        srv.log()
    )
    assert "closing the session of peer bob: it is no longer listed" in srv.log()
    ping(topo.client(1), "192.168.88.1")
    # His client notices and, trying again, is told why.
    assert b.wait(timeout=40) != 0
    assert a.alive()
    c = identity_client(topo, 2, bob, srv_key.public, wait=False)
    assert c.wait(timeout=30) != 0
    assert "does not know this client's key" in c.log(), c.log()
