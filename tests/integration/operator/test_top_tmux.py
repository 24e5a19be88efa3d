"""`kcpvpn top` in a real terminal (tmux, 80x24) against a real lab tunnel:
the connected client's row updates while traffic flows; keys sort and quit."""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess

import pytest

from kcpvpn_lab.vpn import (
    kcpvpn_argv,
    ping_in_background,
    start_client,
    start_server,
    status_path,
    wait_until,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


class Tmux:
    """One detached tmux session on a server socket of its own (never the
    user's tmux), removed by close()."""

    def __init__(self, command: list[str], width: int = 80, height: int = 24):
        self.socket = f"kcpvpn-test-{secrets.token_hex(4)}"
        self.tmux(
            "new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
            # The pane stays after the command exits, so the test sees how it ended.
            " ".join(map(shlex.quote, command)) + "; echo EXITED $?; sleep 30",
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr}")
        return r.stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "top").splitlines()

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux_top(topo):
    srv = start_server(
        topo.server, "--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24"
    )
    cli = start_client(topo.client(1), topo.server, "--client-id", "site-1")
    term = Tmux([*kcpvpn_argv(), "top", "--socket", status_path(srv), "--socket", status_path(cli)])
    try:
        yield topo, term
    finally:
        term.close()


def row(screen: list[str], who: str) -> str | None:
    return next((line for line in screen if line.startswith(who)), None)


def test_top_shows_the_client_and_its_row_updates(tmux_top):
    topo, term = tmux_top
    assert wait_until(lambda: row(term.screen(), "site-1") is not None, timeout=10), term.screen()
    screen = term.screen()
    assert len(screen) <= 24 and max(len(line) for line in screen) <= 80
    assert "server [::]:4000" in "\n".join(screen) and "client → 10.77.0.1:4000" in "\n".join(
        screen
    )
    header = next(line for line in screen if line.startswith("client ") and "RTT" in line)
    for title in ("RTT", "up b/s", "down b/s", "loss", "resent", "FEC fix", "queue"):
        assert title in header, header
    idle = row(screen, "site-1")

    pinger = ping_in_background(topo.client(1), "192.168.88.1", count=100, interval=0.05)
    try:

        def busy() -> bool:
            r = row(term.screen(), "site-1")
            # up (client -> server) is the third field: no longer 0 once pings flow.
            return r is not None and r != idle and r.split()[2] != "0"

        assert wait_until(busy, timeout=10, interval=0.2), (idle, term.screen())
        seen = row(term.screen(), "site-1")
        # Refreshed about once a second: a later frame differs again (rates, sparklines).
        assert wait_until(lambda: term.screen() != screen and row(term.screen(), "site-1") != seen,
                          timeout=5, interval=0.2)  # fmt: skip
    finally:
        pinger.stop()

    term.keys("s")
    assert wait_until(lambda: "sort: RTT" in term.screen()[0], timeout=5), term.screen()[0]
    term.keys("r")
    assert wait_until(lambda: "sort: RTT ↑" in term.screen()[0], timeout=5), term.screen()[0]
    term.keys("q")
    assert wait_until(lambda: any("EXITED 0" in line for line in term.screen()), timeout=5)
