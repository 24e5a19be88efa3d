"""`kcpvpn lab load --clients N`: N real client sessions against one real
`kcpvpn server`, and what they cost it.

The clients are the product's own client endpoint (handshake with cookies
and retries, sealed KCP/FEC sessions), N of them in this process's native
load driver (kcpvpn_lab._emulator.LoadDriver) with one UDP socket each, bound
in turn to many addresses of one lab host (as many hosts, a few clients
behind each). Each client sends one ICMP echo request through its tunnel to
the server's tunnel address; the server's kernel answers through the tunnel.

Steps and figures:
  connect   time until every client has a session, handshakes per second
  ping      echo requests answered (one per client)
  idle      server RSS and engine heap per session, server CPU per idle client
  goodbye   every client leaves: time until the server released them all
  sigterm   every client back, then SIGTERM: time until the server exited

Server figures come from /proc/<pid>/{status,stat} and its status socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import netns as nsutil
from .topology import WAN_NET, Host, Topology
from .vpn import SECRET, daemon_status, start_server

PORT = 4000
TUNNEL_NET_BASE = ipaddress.ip_address("10.100.0.0")
# Client-side source addresses: WAN_NET[FIRST_SOURCE...]; the lab's own
# hosts use .1 (server) and .11.. (clients).
FIRST_SOURCE = 100
MAX_SOURCES = 150
MAX_LOAD_CLIENTS = 16_000
IFACE_PREFIX = "kvs"


@dataclass
class LoadResult:
    clients: int
    sources: int
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def tunnel_pool(clients: int) -> tuple[str, str]:
    """(--assignable-ips, --local-ip): the smallest IPv4 network holding
    every client, the server's address and the network/broadcast addresses."""
    bits = max(2, math.ceil(math.log2(clients + 3)))
    net = ipaddress.ip_network(f"{TUNNEL_NET_BASE}/{32 - bits}")
    return str(net), str(net[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def server_ifaces(host: Host) -> int:
    return sum(1 for n in host.links() if n.startswith(IFACE_PREFIX))


def _wait(cond: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until `cond()` held, or None after `timeout`."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return None
        time.sleep(interval)


def _pct(xs: list[int], p: float) -> int | None:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


def run_load(
    clients: int,
    per_source: int = 8,
    idle_seconds: float = 10.0,
    connect_timeout: float = 60.0,
    sigterm: bool = True,
    say: Callable[[str], None] = print,
    server_flags: tuple[str, ...] = (),
) -> LoadResult:
    """Runs the whole load in a fresh topology (removed afterwards); the
    result lists the figures and anything that fell short."""
    from ._emulator import LoadDriver

    if not 1 <= clients <= MAX_LOAD_CLIENTS:
        raise ValueError(f"--clients {clients}: use 1..{MAX_LOAD_CLIENTS}")
    if per_source < 1:
        raise ValueError(f"--per-source {per_source}: use 1 or more")
    n_sources = min(MAX_SOURCES, math.ceil(clients / per_source))
    res = LoadResult(clients=clients, sources=n_sources)
    fig = res.figures
    pool, local_ip = tunnel_pool(clients)

    with Topology(clients=1, wan=False) as topo:
        host = topo.client(1)
        sources = [str(WAN_NET[FIRST_SOURCE + k]) for k in range(n_sources)]
        with host.ipr() as ip:
            idx = ip.link_lookup(ifname=host.ifname)[0]
            for a in sources:
                ip.addr("add", index=idx, address=a, prefixlen=WAN_NET.prefixlen)
        server = start_server(
            topo.server,
            "--local-ip",
            local_ip,
            "--assignable-ips",
            pool,
            "--max-clients",
            str(clients),
            *server_flags,
            port=PORT,
        )
        pid = server.pid
        say(
            f"server pid {pid} in {topo.server.ns}: pool {pool}; {clients} clients from "
            f"{n_sources} addresses of {host.ns} ({math.ceil(clients / n_sources)} per address)"
        )
        time.sleep(0.5)  # let the freshly started server settle before the baseline
        rss0 = rss_kib(pid)
        fig["server_rss_kib_before"] = rss0
        fig["server_fds_before"] = open_fds(pid)

        # Sockets belong to the namespace they were made in: the driver's are
        # made in the client host's, then used from here.
        with nsutil.inside(host.ns):
            driver = LoadDriver(
                f"{topo.server.address}:{PORT}",
                sources,
                clients,
                SECRET.encode(),
                id_prefix="load",
                seed=int.from_bytes(os.urandom(8), "little"),
            )
        try:
            _phases(res, driver, topo, server, idle_seconds, connect_timeout, sigterm, say)
        finally:
            driver.stop()
    return res


def _phases(
    res: LoadResult,
    driver: Any,
    topo: Topology,
    server: Any,
    idle_seconds: float,
    connect_timeout: float,
    sigterm: bool,
    say: Callable[[str], None],
) -> None:
    fig = res.figures
    n = res.clients
    pid = server.pid

    def status_clients() -> int:
        try:
            return len(daemon_status(server, timeout=5.0)["clients"])
        except (OSError, ValueError, KeyError):
            return -1

    # --- connect -------------------------------------------------------------------
    cpu0 = cpu_seconds(pid)
    driver.connect()
    took = _wait(lambda: driver.report()["connected"] >= n, connect_timeout, 0.01)
    r = driver.report()
    fig["connected"] = r["connected"]
    fig["connect_s"] = r["last_connect_ms"] / 1000 if r["last_connect_ms"] is not None else None
    fig["connect_p50_ms"] = _pct(r["connect_ms"], 0.5)
    fig["connect_p90_ms"] = _pct(r["connect_ms"], 0.9)
    fig["handshakes_per_s"] = round(r["connects"] / fig["connect_s"]) if fig["connect_s"] else 0
    fig["handshake_attempts"] = r["handshake_attempts"]
    fig["cookies_in"] = r["cookies_in"]
    fig["connect_failures"] = dict(r["failures"])
    fig["server_cpu_connect_s"] = round(cpu_seconds(pid) - cpu0, 2)
    say(
        f"connect: {r['connected']}/{n} in {fig['connect_s']} s "
        f"({fig['handshakes_per_s']} handshakes/s; p50 {fig['connect_p50_ms']} ms, "
        f"p90 {fig['connect_p90_ms']} ms); {r['handshake_attempts']} message 1s, "
        f"{r['cookies_in']} cookies; server CPU {fig['server_cpu_connect_s']} s"
        + (f"; failures {dict(r['failures'])}" if r["failures"] else "")
    )
    if took is None:
        res.problems.append(
            f"only {r['connected']} of {n} clients connected within {connect_timeout} s"
        )

    # --- ping ----------------------------------------------------------------------
    driver.ping()
    _wait(lambda: (lambda x: x["pings_answered"] >= x["pings_sent"])(driver.report()), 10.0)
    r = driver.report()
    fig["pings_sent"] = r["pings_sent"]
    fig["pings_answered"] = r["pings_answered"]
    fig["ping_p50_ms"] = _pct(r["ping_ms"], 0.5)
    fig["ping_max_ms"] = r["ping_ms"][-1] if r["ping_ms"] else None
    say(
        f"ping: {r['pings_answered']}/{r['pings_sent']} answered through the tunnel "
        f"(p50 {fig['ping_p50_ms']} ms, max {fig['ping_max_ms']} ms)"
    )
    if r["pings_answered"] < n:
        res.problems.append(f"{n - r['pings_answered']} of {n} pings were not answered")

    # --- idle ----------------------------------------------------------------------
    # Sessions quiet for 5 s give back their buffers (session.rs IDLE_TRIM_MS).
    time.sleep(6.0)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(idle_seconds)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    rss1 = rss_kib(pid)
    doc = daemon_status(server, timeout=10.0)
    heap = sum(c.get("heap_bytes", 0) for c in doc["clients"])
    up = len(doc["clients"])
    fig["server_clients"] = up
    fig["server_rss_kib_idle"] = rss1
    per = (rss1 - fig["server_rss_kib_before"]) / max(1, up)
    fig["rss_kib_per_session"] = round(per, 1)
    fig["heap_kib_per_session"] = round(heap / 1024 / max(1, up), 1)
    fig["idle_cpu_percent"] = round(cpu * 100, 2)
    fig["idle_cpu_percent_per_1000"] = round(cpu * 100 * 1000 / max(1, up), 2)
    fig["server_interfaces"] = server_ifaces(topo.server)
    say(
        f"idle ({idle_seconds:g} s, {up} sessions): server CPU {fig['idle_cpu_percent']}% of a "
        f"core; RSS {fig['server_rss_kib_before']} -> {rss1} KiB = "
        f"{fig['rss_kib_per_session']} KiB per session (engine heap "
        f"{fig['heap_kib_per_session']} KiB of it); {fig['server_interfaces']} interfaces"
    )
    if up != n:
        res.problems.append(f"the server lists {up} clients, not {n}")

    # --- goodbye -------------------------------------------------------------------
    driver.close()
    gone = _wait(lambda: status_clients() == 0 and server_ifaces(topo.server) == 0, 30.0, 0.02)
    fig["goodbye_s"] = round(gone, 2) if gone is not None else None
    fig["server_fds_after_goodbye"] = open_fds(pid)
    say(
        f"goodbye: the server released every client in {fig['goodbye_s']} s "
        f"(descriptors {fig['server_fds_before']} before, {fig['server_fds_after_goodbye']} after)"
    )
    # A few may come and go (status connections): a leak is one per client.
    if fig["server_fds_after_goodbye"] > fig["server_fds_before"] + 8:
        res.problems.append(
            f"the server holds {fig['server_fds_after_goodbye']} descriptors after every "
            f"client left, {fig['server_fds_before']} before they came"
        )
    if gone is None:
        res.problems.append(
            f"after the goodbyes the server still lists {status_clients()} clients and "
            f"{server_ifaces(topo.server)} interfaces"
        )

    if not sigterm:
        return
    # --- SIGTERM with every client connected -----------------------------------------
    driver.connect()
    back = _wait(lambda: driver.report()["connected"] >= n, connect_timeout, 0.01)
    _wait(lambda: status_clients() == n, 10.0, 0.1)
    r = driver.report()
    fig["reconnect_s"] = r["last_connect_ms"] / 1000 if r["last_connect_ms"] is not None else None
    say(f"reconnect: {r['connected']}/{n} in {fig['reconnect_s']} s")
    if back is None:
        res.problems.append(f"only {r['connected']} of {n} clients connected again")
    t0 = time.monotonic()
    server.send_signal(15)
    with contextlib.suppress(Exception):
        server.wait(60)
    fig["sigterm_s"] = round(time.monotonic() - t0, 2)
    fig["sigterm_exit_code"] = server.returncode
    left = server_ifaces(topo.server)
    fig["interfaces_after_sigterm"] = left
    _wait(lambda: driver.report()["connected"] == 0, 5.0)
    r = driver.report()
    fig["goodbyes_from_server"] = dict(r["closed"]).get("by_peer", 0)
    say(
        f"sigterm: the server exited ({server.returncode}) in {fig['sigterm_s']} s; "
        f"{left} interfaces left; {fig['goodbyes_from_server']} clients heard its goodbye"
    )
    if server.returncode != 0:
        res.problems.append(f"the server exited with {server.returncode} on SIGTERM")
    if left:
        res.problems.append(f"{left} interfaces were left after SIGTERM")
