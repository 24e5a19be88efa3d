"""Faults of the path: blackouts shorter and longer than the dead-peer
timeout, an uplink that goes away (network unreachable), a server restart.
Before: a 20-second blackout ended the session after ~17 s ("link dead
(retransmissions exhausted)") although the timeout was 31 s, and the
--auto-reconnect client then exited on "[Errno 101] Network is
unreachable"; a restarted server was noticed after 16 s."""

from __future__ import annotations

import signal
import time

import pytest

from kcpvpn_lab.vpn import (
    connected_since,
    ping,
    ping_in_background,
    ping_losses,
    start_client,
    start_server,
)

from .conftest import SERVER_FLAGS, SERVER_IP, connected, wait_for

pytestmark = pytest.mark.netns

BLACKOUT = {"loss": 1.0}


def test_a_blackout_shorter_than_the_timeout_keeps_the_session(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    # A ping every 0.1 s runs into 20 s of nothing (timeout: 31 s).
    pinger = ping_in_background(topo.client(1), SERVER_IP, count=400, interval=0.1)
    time.sleep(2)
    topo.impair(BLACKOUT)
    time.sleep(20)
    topo.impair({})
    # Traffic resumes within a second or so: retransmissions back off to
    # one a second at most.
    took = wait_for(lambda: _one_ping(topo), 5)
    assert took is not None, "no ping got through within 5 s of the path's return"
    sent, lost = ping_losses(pinger)
    assert connected_since(cli) == since, "the session must go on, not reconnect"
    assert "session ended" not in cli.log() and "disconnected" not in srv.log()
    assert cli.alive() and srv.alive()
    # What was lost is the blackout (about 200 pings), nothing around it.
    assert lost <= 200 + 15, (sent, lost)


def _one_ping(topo) -> bool:
    r = topo.client(1).run(["ping", "-n", "-c", "1", "-W", "0.3", SERVER_IP], check=False)
    return r.returncode == 0


def test_auto_reconnect_rides_out_an_unreachable_network(topo):
    """The client's uplink goes down: sends fail with "network unreachable"."""
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect")
    since = connected_since(cli)
    c1 = topo.client(1)
    c1.run(["ip", "link", "set", "eth0", "down"])
    time.sleep(20)
    c1.run(["ip", "link", "set", "eth0", "up"])
    assert wait_for(lambda: _one_ping(topo), 10) is not None, cli.log()
    assert cli.alive(), cli.log()
    assert "Traceback" not in cli.log()
    assert connected_since(cli) == since, "shorter than the timeout: the same session"
    assert srv.alive()


def test_after_a_long_blackout_the_client_is_back_within_two_seconds(topo):
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "2")
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect", "--keepalive", "2")
    since = connected_since(cli)
    topo.impair(BLACKOUT)
    # Longer than 3 keepalives + 1 s = 7 s: both sides give the session up.
    assert wait_for(lambda: "session ended" in cli.log(), 15) is not None, cli.log()
    time.sleep(5)  # the client keeps trying meanwhile
    tries = cli.log().count("trying again")
    assert tries <= 1, "a long outage is logged once, not once per attempt"
    topo.impair({})
    took = wait_for(lambda: connected(cli) and connected_since(cli) != since, 10)
    assert took is not None, cli.log()
    assert took <= 2.5, f"back {took:.2f} s after the path returned"
    ping(topo.client(1), SERVER_IP)
    assert srv.alive()


def test_a_restarted_server_is_noticed_within_a_keepalive(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect")
    since = connected_since(cli)
    ping(topo.client(1), SERVER_IP)
    srv.send_signal(signal.SIGKILL)  # no goodbye
    srv.wait(timeout=5)
    t0 = time.monotonic()
    srv2 = start_server(topo.server, *SERVER_FLAGS)
    # The idle client's next keepalive (at most 10 s) meets "no such
    # session", and the client checks with a new handshake at once.
    took = wait_for(lambda: connected(cli) and connected_since(cli) != since, 15)
    assert took is not None, cli.log()
    assert time.monotonic() - t0 <= 12, cli.log()
    ping(topo.client(1), SERVER_IP)
    assert cli.alive() and srv2.alive()


def test_auto_reconnect_waits_out_a_name_that_does_not_resolve(topo):
    """DNS failure at start: with --auto-reconnect the client keeps trying
    (one log line) and connects once the name resolves."""
    import shutil
    from pathlib import Path

    c1 = topo.client(1)
    etc = Path("/etc/netns") / c1.ns  # `ip netns exec` shows it as /etc/hosts
    etc.mkdir(parents=True, exist_ok=True)
    hosts = etc / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    try:
        start_server(topo.server, *SERVER_FLAGS)
        cli = start_client(c1, "vpn.kcpvpn-test.invalid", "--auto-reconnect", wait=False)
        time.sleep(4)
        assert cli.alive(), cli.log()
        assert cli.log().count("cannot resolve") == 1, cli.log()
        hosts.write_text(f"127.0.0.1 localhost\n{topo.server.address} vpn.kcpvpn-test.invalid\n")
        assert wait_for(lambda: connected(cli), 10) is not None, cli.log()
        ping(c1, SERVER_IP)
    finally:
        shutil.rmtree(etc, ignore_errors=True)
