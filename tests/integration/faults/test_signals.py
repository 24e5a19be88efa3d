"""Fault: signals. SIGHUP reloads what can change without dropping a
session (before, it killed the server: no goodbye, no disconnect hooks);
SIGTERM still stops the daemon cleanly."""

from __future__ import annotations

import signal

import pytest

from kcpvpn_lab.vpn import (
    connected_since,
    daemon_status,
    ping,
    start_client,
    start_server,
    wait_exit,
    wait_until,
)

from .conftest import SERVER_IP, kvs

pytestmark = pytest.mark.netns


def _write(path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_sighup_reloads_without_dropping_sessions(topo, tmp_path):
    conf = tmp_path / "server.toml"
    _write(
        conf,
        f'local-ip = "{SERVER_IP}"\nassignable-ips = "192.168.88.0/24"\n'
        'log-level = "info"\nmax-clients = 10\n',
    )
    srv = start_server(topo.server, "--config", str(conf))
    cli = start_client(topo.client(1), topo.server)
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    _write(
        conf,
        f'local-ip = "{SERVER_IP}"\nassignable-ips = "192.168.88.0/25"\n'
        'log-level = "debug"\nmax-clients = 20\nkeepalive = 5\n',
    )
    srv.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "SIGHUP: applied" in srv.log(), 5), srv.log()
    line = next(x for x in srv.log().splitlines() if "SIGHUP: applied" in x)
    for what in ("log_level = 'debug'", "assignable_ips = '192.168.88.0/25'", "max_clients = 20"):
        assert what in line, line
    assert "keepalive" not in line
    assert "takes a restart" in srv.log(), "a transport setting waits for a restart"
    # The session went on untouched.
    assert srv.alive() and cli.alive()
    assert connected_since(cli) == since
    ping(topo.client(1), SERVER_IP)
    assert len(daemon_status(srv)["clients"]) == 1
    # A broken file changes nothing and stops nothing.
    _write(conf, "max-clients = 0\n")
    srv.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "nothing changed" in srv.log(), 5), srv.log()
    assert srv.alive()


def test_sigterm_says_goodbye_and_releases_everything(topo):
    srv = start_server(topo.server, "--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")
    cli = start_client(topo.client(1), topo.server)
    ping(topo.client(1), SERVER_IP)
    srv.send_signal(signal.SIGTERM)
    assert wait_exit(srv, timeout=10) == 0, srv.log()
    assert kvs(topo.server) == []
    # The client heard the goodbye at once (not after its timeout).
    assert wait_until(lambda: "closed by peer" in cli.log(), 3), cli.log()
