"""Running kcpvpn daemons in lab hosts: the server and clients as real
processes, started with the same command line a user types.

What a daemon is doing (up, connected, which address) comes from its status
socket (`kcpvpn.status`: one JSON document per connection), never from its
log: logs are for people and may change wording at any time."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .process import HostProcess
from .topology import Host

SECRET = "lab-secret-correct-horse-battery"
PORT = 4000


def kcpvpn_argv() -> list[str]:
    """The kcpvpn command of the Python running the lab (its venv's script)."""
    here = Path(sys.executable).parent / "kcpvpn"
    if here.exists():
        return [str(here)]
    found = shutil.which("kcpvpn")
    if found:
        return [found]
    return [sys.executable, "-m", "kcpvpn"]


class DaemonFailed(RuntimeError):
    pass


def _status_flag(host: Host, role: str, flags: Sequence[str], wait: bool) -> list[str]:
    """A status socket in the run's own directory: the default path under
    /run is shared by every namespace, so parallel runs would collide."""
    if "--status-socket" in flags:
        given = [*flags, ""][list(flags).index("--status-socket") + 1]
        if wait and given.lower() == "none":
            raise ValueError(
                "--status-socket none: the lab learns that a daemon is up from its status "
                "socket; pass a path (or none at all), or start it with wait=False"
            )
        return []
    n = sum(1 for p in host.topo.processes if p.ns == host.ns)
    return ["--status-socket", str(host.topo.run_dir / f"{host.name}.{role}.{n}.sock")]


def status_path(proc: HostProcess) -> str:
    """The status socket a daemon started by this module answers on."""
    return proc.argv[proc.argv.index("--status-socket") + 1]


def daemon_status(proc: HostProcess, timeout: float = 3.0) -> dict:
    """The status document of a daemon started by this module (see module doc).
    OSError when it does not answer (not up yet, or gone); ValueError when the
    socket answers for another process than `proc`."""
    doc = read_status(status_path(proc), timeout=timeout)
    if doc.get("pid") != proc.pid:
        raise ValueError(f"{status_path(proc)} answers for pid {doc.get('pid')}, not {proc!r}")
    return doc


def _wait_status(
    proc: HostProcess, ready: Callable[[dict], bool], timeout: float, what: str
) -> dict:
    """Polls the daemon's status until `ready(doc)`; DaemonFailed with its log
    when it exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    doc: dict | None = None
    while True:
        if not proc.alive():
            raise DaemonFailed(
                f"{what} exited ({proc.returncode}) before it was ready; its log:\n{proc.log()}"
            )
        try:
            doc = daemon_status(proc, timeout=1.0)
            if ready(doc):
                return doc
        except (OSError, ValueError):
            pass  # the socket is not there yet (or still the previous daemon's)
        if time.monotonic() >= deadline:
            raise DaemonFailed(
                f"{what} was not ready within {timeout} s ({proc!r}); last status: {doc}; "
                f"its log:\n{proc.log()}"
            )
        time.sleep(0.05)


def start_server(
    host: Host,
    *flags: str,
    secret: str = SECRET,
    port: int = PORT,
    wait: bool = True,
    timeout: float = 20.0,
) -> HostProcess:
    """`kcpvpn server --port PORT FLAGS` in `host`; waits until it listens (its
    status socket answers: the server opens it once its UDP socket is bound)."""
    argv = [
        *kcpvpn_argv(),
        "server",
        "--port",
        str(port),
        *_status_flag(host, "server", flags, wait),
        *flags,
    ]
    proc = host.popen(argv, name="kcpvpn-server", env={"KCPVPN_KEY": secret})
    if wait:
        _wait_status(proc, lambda d: d.get("mode") == "server", timeout, "kcpvpn server")
    return proc


def start_client(
    host: Host,
    server: Host | str,
    *flags: str,
    secret: str = SECRET,
    port: int = PORT,
    wait: bool = True,
    timeout: float = 30.0,
) -> HostProcess:
    """`kcpvpn client --ip SERVER --port PORT FLAGS` in `host`; waits until connected
    (status "connected": the data path has the session)."""
    addr = server if isinstance(server, str) else str(server.address)
    argv = [
        *kcpvpn_argv(),
        "client",
        "--ip",
        addr,
        "--port",
        str(port),
        *_status_flag(host, "client", flags, wait),
        *flags,
    ]
    proc = host.popen(argv, name="kcpvpn-client", env={"KCPVPN_KEY": secret})
    if wait:
        _wait_status(proc, _connected, timeout, "kcpvpn client")
    return proc


def _connected(doc: dict) -> bool:
    return doc.get("mode") == "client" and doc.get("state") == "connected"


def _connected_status(proc: HostProcess) -> dict:
    try:
        doc = daemon_status(proc)
    except (OSError, ValueError) as e:
        raise DaemonFailed(f"no status from {proc!r}: {e}; its log:\n{proc.log()}") from None
    if not _connected(doc):
        raise DaemonFailed(f"{proc!r} is not connected; its status: {doc}")
    return doc


def client_address(proc: HostProcess) -> str | None:
    """The tunnel address of the client's current session (None: it has none,
    e.g. --ip-mode none). DaemonFailed when the client is not connected."""
    return _connected_status(proc)["ip"]


def connected_since(proc: HostProcess) -> float:
    """When the client's current session started (status "since", Unix time):
    a later value means it reconnected."""
    return _connected_status(proc)["since"]


def wait_connected_again(proc: HostProcess, since: float, timeout: float = 30.0) -> dict:
    """Waits until the client is connected in a session newer than `since`
    (from `connected_since` before the disconnection); its status document."""
    return _wait_status(
        proc,
        lambda d: _connected(d) and (d.get("since") or 0) > since,
        timeout,
        "the client's new session",
    )


def server_clients(proc: HostProcess) -> list[dict]:
    """The server's clients now, from its status: client_id, interface, ip, ip_mode,
    remote ("addr:port", "[v6]:port"), since, and session counters."""
    return daemon_status(proc)["clients"]


def ping(
    host: Host,
    address: str,
    count: int = 3,
    size: int = 56,
    interval: float = 0.2,
    extra: Sequence[str] = (),
) -> str:
    """Pings through the tunnel; raises with ping's output when any is lost."""
    r = host.run(
        [
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-s",
            str(size),
            "-W",
            "2",
            *extra,
            address,
        ],
        check=False,
        timeout=count * interval + 15,
    )
    if r.returncode != 0:
        raise AssertionError(f"ping {address} from {host.name} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


# --- helpers for the tests of issue 5 (many clients, TAP, hooks, IPv6) ----------------------


def wait_until(cond, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Polls `cond()` until it is true (returns True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_exit(proc: HostProcess, timeout: float = 30.0) -> int:
    """Waits for a daemon expected to exit on its own; its log on failure."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DaemonFailed(
            f"{proc!r} did not exit within {timeout} s; its log:\n{proc.log()}"
        ) from None


def link_counters(host: Host, ifname: str) -> dict[str, int]:
    """rx/tx packet and byte counters of one interface."""
    with host.ipr() as ipr:
        link = ipr.get_links(ifname=ifname)[0]
    st = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
    return {k: st[k] for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}


def link_info(host: Host, ifname: str) -> dict | None:
    """index, MTU, master (bridge index), state and addresses of an interface
    (None when it does not exist)."""
    with host.ipr() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        # IFA_LOCAL is our end of a point-to-point address (IFA_ADDRESS its peer).
        addrs = [
            f"{a.get_attr('IFA_LOCAL') or a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=found[0])
            if a.get("scope", 0) == 0  # global only: no link-local noise
        ]
    return {
        "index": found[0],
        "mtu": link.get_attr("IFLA_MTU"),
        "master": link.get_attr("IFLA_MASTER"),
        "up": bool(link["flags"] & 1),
        "addresses": addrs,
    }


def ping_in_background(host: Host, address: str, count: int, interval: float = 0.1) -> HostProcess:
    """A ping that runs while the test does other things; see `ping_losses`."""
    return host.popen(
        ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", address], name="ping"
    )


def ping_losses(proc: HostProcess, timeout: float = 60.0) -> tuple[int, int]:
    """(sent, lost) of a background ping, once it has finished."""
    wait_exit(proc, timeout)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.log())
    if not m:
        raise DaemonFailed(f"no summary in ping's output:\n{proc.log()}")
    sent, got = int(m.group(1)), int(m.group(2))
    return sent, sent - got


UNDERLAY6_NET = "fd77::/64"


def server_address6() -> str:
    return "fd77::1"


def add_ipv6_underlay(topo) -> dict[str, str]:
    """Gives every server/client host of a Topology(ipv6=True) an IPv6 address
    on eth0 (fd77::1 for the server, fd77::1<i> for client i), without DAD and
    with static neighbour entries, like the lab does for IPv4. Returns
    {host name: address}."""
    if not topo.ipv6:
        raise ValueError("IPv6 is disabled in this topology: use Topology(ipv6=True)")
    hosts = [topo.server, *topo.clients]
    addrs = {
        h.name: server_address6() if h.name == "server" else f"fd77::1{h.name[6:]}" for h in hosts
    }
    macs = {h.name: h.mac() for h in hosts}
    for h in hosts:
        with h.ipr() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address=addrs[h.name], prefixlen=64, flags=0x02)  # nodad
            for other in hosts:
                if other is not h:
                    ipr.neigh(
                        "replace",
                        dst=addrs[other.name],
                        lladdr=macs[other.name],
                        ifindex=idx,
                        family=10,  # AF_INET6
                        state=0x80,  # NUD_PERMANENT
                    )
    return addrs


class NetnsHosts:
    """/etc/netns/<ns>/hosts for one lab host: `ip netns exec` (and so every
    daemon the lab starts there) sees it as /etc/hosts. Removed by `remove()`
    (use as a context manager)."""

    def __init__(self, host: Host, entries: dict[str, str]):
        self.dir = Path("/etc/netns") / host.ns
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{addr} {name}" for name, addr in entries.items()]
        (self.dir / "hosts").write_text("\n".join(lines) + "\n")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir.parent.rmdir()  # only when empty: other runs may use it

    def __enter__(self) -> NetnsHosts:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# --- helpers for the claims and the demo (issue 4) ------------------------------------------------


def status_socket(host: Host, name: str) -> str:
    """A status socket path for a daemon in `host`, inside the topology's run
    directory (so parallel runs never collide and teardown removes it)."""
    return str(host.topo.run_dir / f"{host.name}.{name}.sock")


def read_status(path: str, timeout: float = 3.0) -> dict:
    """One status document (see kcpvpn.status) from the daemon at `path`."""
    from kcpvpn import status

    return status.read(path, timeout=timeout)


def wait_reachable(host: Host, address: str, timeout: float = 15.0) -> None:
    """Pings `address` from `host` once a quarter second until one reply comes
    back: the tunnel's routes are in place on both sides. Raises otherwise."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        r = host.run(["ping", "-n", "-c", "1", "-W", "1", address], check=False, timeout=10)
        if r.returncode == 0:
            return
        out = r.stdout + r.stderr
        time.sleep(0.25)
    raise DaemonFailed(f"{address} is not reachable from {host.name} after {timeout} s:\n{out}")


# The daemons refresh their figures every 250 ms (STATS_PERIOD_MS in the
# tunnel crate's endpoint): a document may lag that much behind the traffic.
STATUS_PERIOD = 0.25


def status_when(path: str, cond, timeout: float = 10.0) -> dict:
    """The first status document from `path` for which `cond(doc)` is true
    (polled); raises with the last document when none is within `timeout`."""
    doc: dict = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = read_status(path)
            if cond(doc):
                return doc
        except (OSError, ValueError, KeyError, IndexError):
            pass  # not up yet, or the figures are not there yet
        if time.monotonic() >= deadline:
            raise AssertionError(f"status of {path} never met the condition; last: {doc}")
        time.sleep(0.05)


def sessions_of(doc: dict) -> list[dict]:
    """The per-session figures of a server ("clients") or client ("sessions") document,
    only those that carry counters already."""
    rows = doc.get("clients") if doc.get("mode") == "server" else doc.get("sessions")
    return [r for r in rows or [] if "kcp" in r]
