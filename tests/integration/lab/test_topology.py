"""Topologies: created as declared, removed completely whatever happens."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kcpvpn_lab import probes
from kcpvpn_lab.topology import PREFIX, Topology, clean, lab_namespaces

pytestmark = pytest.mark.netns


def gone(pid: int, timeout: float = 10.0) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def ip_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_topology_is_built_as_declared_and_removed_on_exit():
    with Topology(clients=2) as t:
        names = set(t.namespaces)
        assert len(names) == 4 and all(n.startswith(t.prefix + "-") for n in names)
        assert names <= ip_netns()
        assert set(t.wan.links()) >= {"c1", "c2", "s0", "brc", "xa", "ea"}
        assert t.client(1).links() == ["lo", "eth0"]
        # The emulator is the only path: no IP forwarding, the two sides are not bridged.
        assert t.wan.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
        assert "master" not in t.wan.run(["ip", "-o", "link", "show", "s0"]).stdout
        assert "master" not in t.wan.run(["ip", "-o", "link", "show", "ea"]).stdout
        for c in t.clients:
            assert probes.ping(c, str(t.server.address), count=3, interval=0.05).received == 3
        assert (
            probes.ping(t.client(1), str(t.client(2).address), count=2, interval=0.05).received == 2
        )
        run_dir = t.run_dir
        assert run_dir.is_dir()
    assert not names & ip_netns()
    assert not run_dir.exists()


def test_teardown_happens_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with Topology(clients=1) as t:
            names = set(t.namespaces)
            emulator_pid = t.emulator_proc.pid
            raise RuntimeError("boom")
    assert not names & ip_netns()
    assert gone(emulator_pid)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from kcpvpn_lab.topology import Topology
    with Topology(clients=1) as t:
        print(" ".join(t.namespaces), t.emulator_proc.pid, flush=True)
        time.sleep(60)
    """
)


def _start_lab_process():
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = p.stdout.readline().split()
    assert line, p.stderr.read()
    return p, set(line[:-1]), int(line[-1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_teardown_happens_on_signals(sig):
    p, names, emu_pid = _start_lab_process()
    try:
        assert names <= ip_netns()
        p.send_signal(sig)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not names & ip_netns()
    assert gone(emu_pid)


def test_clean_removes_crashed_runs_only():
    with Topology(clients=1) as live:
        p, names, emu_pid = _start_lab_process()
        p.kill()  # no chance to clean up: a crash
        p.wait()
        assert names <= ip_netns(), "a crashed run leaves its namespaces"
        removed = clean()
        assert set(removed) >= names
        assert not names & ip_netns()
        assert gone(emu_pid)
        # A live run (like another xdist worker's) is left alone.
        assert set(live.namespaces) <= ip_netns()
        assert all(n.startswith(PREFIX) for n in lab_namespaces())


def test_cli_clean_runs():
    r = subprocess.run(
        [sys.executable, "-m", "kcpvpn_lab.cli", "clean"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_processes_run_inside_the_namespace_log_and_stop_by_pid(topo):
    p = topo.server.popen(
        ["sh", "-c", "ip -o link show; echo started; exec sleep 60"], name="probe"
    )
    assert p.wait_for_log("started", timeout=10)
    log = p.log()
    assert "eth0" in log and "s0" not in log, "the process sees the server's interfaces only"
    assert p.alive()
    assert p.stop(timeout=5) == -signal.SIGTERM
    assert not p.alive()

    # Commands from this Python's venv are on PATH inside the lab (for `kcpvpn server` later).
    assert topo.server.run(["kcpvpn-lab", "--help"]).returncode == 0

    stubborn = topo.client(1).popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
    )
    assert stubborn.wait_for_log("ready", timeout=10)
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL


def test_processes_left_running_are_stopped_with_the_topology():
    with Topology(clients=1) as t:
        p = t.client(1).popen(["sleep", "60"])
        pid = p.pid
    assert gone(pid)


def test_bridges_and_lan_hosts(make_topology):
    t = make_topology(clients=1, lan_hosts={"server": 2, "client1": 1})
    assert "br0" in t.server.links() and "br0" in t.client(1).links()
    lan1, lan2 = t.host("server-lan1"), t.host("server-lan2")
    # Hosts on one bridge reach each other; the client's LAN stays apart until a tunnel joins them.
    assert probes.ping(lan1, str(lan2.address), count=2, interval=0.05).received == 2
    assert probes.arp_probe(lan1, "eth0", str(lan2.address), src_ip=str(lan1.address)) == lan2.mac()
    assert (
        probes.arp_probe(lan1, "eth0", str(t.host("client1-lan1").address), timeout=0.5, tries=1)
        is None
    )


def test_plain_bridge_without_emulator(make_topology):
    t = make_topology(clients=2, wan=False)
    assert t.emulator is None
    assert probes.ping(t.client(2), str(t.server.address), count=3, interval=0.05).received == 3


def test_parallel_topologies_do_not_collide(make_topology):
    a = make_topology(clients=1)
    b = make_topology(clients=1)
    assert not set(a.namespaces) & set(b.namespaces)
    assert probes.udp_flow(a.client(1), a.server, count=100, idle_timeout=0.3).complete
    assert probes.udp_flow(b.client(1), b.server, count=100, idle_timeout=0.3).complete
    time.sleep(0)  # both stay up until the fixture removes them
