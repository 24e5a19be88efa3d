"""Issue 5: hooks run by real daemons. The server runs on_<id>_connected (or
on_connected) and the disconnected variants from --hook-dir; the client runs
--on-connected-hook / --on-disconnected-hook. Each hook here writes its KV_*
environment to a file, which the test reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcpvpn_lab.vpn import (
    ping,
    server_clients,
    start_client,
    start_server,
    wait_exit,
    wait_until,
)

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")


def dump_env_hook(path: Path, out: Path) -> Path:
    """A hook writing its KV_* variables (and whether it saw the secret) to `out`."""
    path.write_text(
        "#!/bin/sh\n"
        f'env | grep "^KV_" | sort > "{out}.tmp"\n'
        f'echo "SECRET=${{KCPVPN_KEY-unset}}" >> "{out}.tmp"\n'
        f'mv "{out}.tmp" "{out}"\n'
    )
    path.chmod(0o700)
    return path


def read_env(path: Path, timeout: float = 10.0) -> dict[str, str]:
    assert wait_until(path.exists, timeout), f"{path.name} was never written"
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def remote_of(srv, client_id: str) -> str:
    """The client's address:port as the server sees it (its status)."""
    (remote,) = [c["remote"] for c in server_clients(srv) if c["client_id"] == client_id]
    return remote


@pytest.mark.netns
def test_server_and_client_hooks_get_their_environment(make_topology, tmp_path):
    hooks, out = tmp_path / "hooks", tmp_path / "out"
    hooks.mkdir(mode=0o700)
    out.mkdir()
    dump_env_hook(hooks / "on_alpha_connected", out / "srv-alpha-connected")
    dump_env_hook(hooks / "on_alpha_disconnected", out / "srv-alpha-disconnected")
    # The generic hooks name their output after the id they were given.
    for event in ("connected", "disconnected"):
        (hooks / f"on_{event}").write_text(
            "#!/bin/sh\n"
            f'env | grep "^KV_" | sort > "{out}/srv-generic-{event}-${{KV_CLIENT_ID:-noid}}"\n'
        )
        (hooks / f"on_{event}").chmod(0o700)
    cli_on = dump_env_hook(tmp_path / "cli-on", out / "cli-connected")
    cli_off = dump_env_hook(tmp_path / "cli-off", out / "cli-disconnected")

    topo = make_topology(clients=3)
    srv = start_server(topo.server, *SERVER_FLAGS, "--hook-dir", str(hooks))
    alpha = start_client(
        topo.client(1),
        topo.server,
        "--client-id",
        "alpha",
        "--on-connected-hook",
        str(cli_on),
        "--on-disconnected-hook",
        str(cli_off),
    )
    beta = start_client(
        topo.client(2), topo.server, "--client-id", "beta", "--local-ip", "192.168.88.50"
    )
    anon = start_client(topo.client(3), topo.server, "--no-ip-configuration")

    # Server, specific hook for alpha (server-assigned address).
    env = read_env(out / "srv-alpha-connected")
    assert remote_of(srv, "alpha").startswith(f"{topo.client(1).address}:")
    assert env == {
        "KV_CLIENT_ID": "alpha",
        "KV_VNI_INTERFACE_NAME": "kvs0",
        "KV_CLIENT_IP": "192.168.88.2",
        "KV_CLIENT_IP_MODE": "0",
        "KV_REMOTE_ADDR": remote_of(srv, "alpha"),
        "SECRET": "unset",
    }
    # Client side: the same client as the client sees it.
    assert read_env(out / "cli-connected") == {
        "KV_CLIENT_ID": "alpha",
        "KV_VNI_INTERFACE_NAME": "kvc0",
        "KV_CLIENT_IP": "192.168.88.2",
        "KV_CLIENT_IP_MODE": "0",
        "KV_REMOTE_ADDR": f"{topo.server.address}:4000",
        "SECRET": "unset",
    }
    # Generic hook: beta asked for a fixed address, the anonymous client for none.
    assert read_env(out / "srv-generic-connected-beta") == {
        "KV_CLIENT_ID": "beta",
        "KV_VNI_INTERFACE_NAME": "kvs1",
        "KV_CLIENT_IP": "192.168.88.50",
        "KV_CLIENT_IP_MODE": "1",
        "KV_REMOTE_ADDR": remote_of(srv, "beta"),
    }
    env = read_env(out / "srv-generic-connected-noid")
    assert env["KV_CLIENT_ID"] == "" and env["KV_VNI_INTERFACE_NAME"] == "kvs2"
    assert (env["KV_CLIENT_IP"], env["KV_CLIENT_IP_MODE"]) == ("0.0.0.0", "2")
    assert not (out / "srv-generic-connected-alpha").exists(), "the specific hook wins"

    # Disconnects: the same environment once more.
    assert alpha.stop() == 0
    env = read_env(out / "srv-alpha-disconnected")
    assert env["KV_CLIENT_ID"] == "alpha" and env["KV_VNI_INTERFACE_NAME"] == "kvs0"
    assert env["KV_CLIENT_IP"] == "192.168.88.2"
    off = read_env(out / "cli-disconnected")
    assert off["KV_VNI_INTERFACE_NAME"] == "kvc0" and off["KV_CLIENT_IP"] == "192.168.88.2"
    assert beta.stop() == 0 and anon.stop() == 0
    assert read_env(out / "srv-generic-disconnected-beta")["KV_CLIENT_IP_MODE"] == "1"
    assert read_env(out / "srv-generic-disconnected-noid")["KV_CLIENT_IP_MODE"] == "2"
    # Each run is logged with its outcome.
    assert f"connected hook {hooks}/on_alpha_connected for alpha done" in srv.log()


@pytest.mark.netns
@pytest.mark.parametrize("bad_id", ["../../x", "a/b", "x" * 17])
def test_client_refuses_a_path_escaping_id(topo, bad_id):
    cli = start_client(topo.client(1), topo.server, "--client-id", bad_id, wait=False)
    assert wait_exit(cli) == 2
    assert "--client-id" in cli.log(), cli.log()
    assert "kvc0" not in topo.client(1).links()


def test_a_bad_id_never_goes_on_the_wire():
    """Below the CLI's check: the engine refuses to start a handshake with
    such an id (and the server's decoder refuses it too: Rust tests in
    crypto/handshake)."""
    import os
    import socket

    from kcpvpn import _engine, errors

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ep = _engine.Endpoint.client(
        os.dup(sock.fileno()), _engine.Psk(b"x" * 16), _engine.SessionParams()
    )
    try:
        with pytest.raises(errors.InvalidParameter, match="client id"):
            ep.connect(("127.0.0.1", 9), mtu=1500, client_id="../../x")
    finally:
        ep.stop()
        sock.close()


class _FakeEndpoint:
    def __init__(self) -> None:
        self.refused: list[tuple[int, str]] = []

    def refuse(self, request, reason: str) -> None:
        self.refused.append((request.pending_id, reason))


def test_server_refuses_a_bad_id_before_any_hook(tmp_path):
    """The server's own check (defence in depth behind the decoder): a request
    with a path-escaping id is refused and runs no hook, even one placed
    where the traversal would lead."""
    from kcpvpn import _engine
    from kcpvpn.config import ServerConfig
    from kcpvpn.hooks import HookRunner
    from kcpvpn.server import Server

    hooks = tmp_path / "hooks"
    (hooks / "on_..").mkdir(parents=True)
    marker = tmp_path / "ran"
    for p in (tmp_path / "x_connected", hooks / "on_connected"):
        p.write_text(f"#!/bin/sh\ntouch {marker}\n")
        p.chmod(0o700)
    srv = Server.__new__(Server)  # the policy only: no socket, no data path
    srv.cfg = ServerConfig()
    srv.endpoint = _FakeEndpoint()
    srv.hooks = HookRunner(hooks)
    srv.clients = {}
    req = _engine.HandshakeRequest(
        pending_id=7, peer=("10.0.0.2", 5555), client_id="../../x", mtu=1500
    )
    srv.on_request(req)
    assert srv.endpoint.refused and srv.endpoint.refused[0][0] == 7
    assert "client id" in srv.endpoint.refused[0][1]
    assert srv.hooks.wait(5) and not marker.exists()


@pytest.mark.netns
def test_a_slow_hook_stalls_nobody(make_topology, tmp_path):
    hooks, release, done = tmp_path / "hooks", tmp_path / "release", tmp_path / "done"
    hooks.mkdir(mode=0o700)
    # slow's hook waits until the test lets it go (at most 20 s).
    (hooks / "on_slow_connected").write_text(
        "#!/bin/sh\n"
        f'for i in $(seq 400); do [ -e "{release}" ] && break; sleep 0.05; done\n'
        f'touch "{done}"\n'
    )
    (hooks / "on_slow_connected").chmod(0o700)
    topo = make_topology(clients=2)
    srv = start_server(topo.server, *SERVER_FLAGS, "--hook-dir", str(hooks))
    start_client(topo.client(1), topo.server, "--client-id", "slow")
    # While slow's hook runs: slow's own traffic flows and another client connects.
    ping(topo.client(1), SERVER_IP)
    start_client(topo.client(2), topo.server, "--client-id", "other")
    ping(topo.client(2), SERVER_IP)
    assert not done.exists(), "the hook must still be running here"
    release.touch()
    assert wait_until(done.exists, 10)
    assert wait_until(lambda: "on_slow_connected for slow done" in srv.log(), 5), srv.log()
