"""Declarative lab topologies: network namespaces joined by veth pairs.

    with Topology(clients=2, impair={"delay_ms": 20, "loss": 0.05}) as topo:
        topo.client(1).run(["ping", "-c", "3", str(topo.server.address)])

Shape (every box is a network namespace named `kvl<id>-<role>`):

    client1 eth0 ─veth─ c1 ┐
    client2 eth0 ─veth─ c2 ┴ brc ─ xa═ea ⇄ emulator ⇄ s0 ─veth─ eth0 server
                         └────────── wan namespace ─────────┘

The wan host forwards at layer 2 only through the emulator (its own process
in the wan namespace, AF_PACKET on `ea`/`c1` and `s0`): no kernel bridge or
IP forwarding joins the two sides, so every frame between clients and server
gets the impairments. With one client the emulator sits on `c1` directly.
All hosts share one subnet (WAN_NET) on that emulated segment, with static
ARP entries so address resolution does not depend on the lossy link.
With `wan=False` a plain kernel bridge joins everything instead (reference runs).

With `middlebox=True` the clients sit behind a stateful firewall with NAT,
as on a network that blocks UDP (see `MIDDLEBOX_RULES`):

    client1 eth0 ─veth─ l1 ┐
    client2 eth0 ─veth─ l2 ┴ lan (MB_NET .1) mbox eth0 (WAN .9) ─ m0 ⇄ emulator ⇄ s0 ─ server

The mbox namespace forwards between its LAN and the wan, masquerading the
clients behind its own WAN address; the server sees only that address.

Everything is removed on exit, on exceptions, on Ctrl-C and on SIGTERM.
`clean()` removes what crashed runs left behind (only names starting with
`kvl` whose owning process is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from . import netns as nsutil
from ._emulator import LinkEmulator
from .emulator import EmulatorClient
from .process import HostProcess, lab_env

log = logging.getLogger("kcpvpn_lab")

PREFIX = "kvl"
RUN_ROOT = Path(tempfile.gettempdir()) / "kcpvpn-lab"
WAN_NET = ipaddress.ip_network("10.77.0.0/24")
LAN_NET = ipaddress.ip_network("10.78.0.0/24")
MB_NET = ipaddress.ip_network("10.79.0.0/24")
SERVER_ADDR = WAN_NET[1]
MBOX_ADDR = WAN_NET[9]
# The middlebox: conntrack with default (not liberal) TCP window tracking;
# only established flows and new SYNs cross; invalid packets and all UDP
# are dropped (each rule counts what it matched: `middlebox_counters`;
# counter names carry a prefix because `udp` and the like are nft keywords).
MIDDLEBOX_RULES = """
table inet mbox {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state invalid counter name n_invalid drop
    meta l4proto udp counter name n_udp drop
    ct state established counter name n_established accept
    tcp flags & (syn | ack | fin | rst) == syn ct state new counter name n_new_syn accept
    counter name n_other drop
  }
  counter n_invalid { }
  counter n_udp { }
  counter n_established { }
  counter n_new_syn { }
  counter n_other { }
}
table ip mbox_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" masquerade
  }
}
"""
MAX_CLIENTS = 200

# Offloads that would hand the emulator oversized (GSO) frames or frames with
# unfinished checksums: off on both ends of every veth that crosses it.
OFFLOADS_OFF = ["rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro", "off"]


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(run_id: str) -> bool:
    try:
        pid_s, start = (RUN_ROOT / run_id / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid_s)) == start


class Host:
    """One network namespace of the lab."""

    def __init__(self, topo: Topology, name: str, ns: str):
        self.topo = topo
        self.name = name
        self.ns = ns
        self.ifname = "eth0"
        self.address: ipaddress.IPv4Address | None = None
        self.prefixlen = WAN_NET.prefixlen

    # --- processes -----------------------------------------------------------
    def popen(
        self,
        argv: Sequence[str],
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> HostProcess:
        """Start a real process in this namespace; output goes to a log file in
        the run directory; the lab stops it (by PID) when the topology closes."""
        label = name or Path(argv[0]).name
        n = sum(1 for p in self.topo.processes if p.ns == self.ns)
        log_path = self.topo.run_dir / f"{self.name}.{label}.{n}.log"
        proc = HostProcess(self.ns, argv, log_path, env=env, cwd=cwd)
        self.topo.processes.append(proc)
        return proc

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        check: bool = True,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in this namespace and capture its output."""
        r = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=lab_env(),
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed in {self.name} ({self.ns}) with {r.returncode}: "
                f"{r.stderr.strip() or r.stdout.strip()}"
            )
        return r

    # --- configuration -----------------------------------------------------------
    def ipr(self) -> IPRoute:
        """An IPRoute bound to this namespace (use as a context manager)."""
        return IPRoute(netns=self.ns)

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket living in this namespace."""
        return nsutil.ns_socket(self.ns, family, type_, proto)

    def sysctl(self, key: str, value: str | int) -> None:
        nsutil.sysctl(self.ns, key, value)

    def mac(self, ifname: str | None = None) -> str:
        with self.ipr() as ip:
            link = ip.link("get", ifname=ifname or self.ifname)[0]
            return link.get("IFLA_ADDRESS")

    def links(self) -> list[str]:
        with self.ipr() as ip:
            return [lk.get("IFLA_IFNAME") for lk in ip.get_links()]

    def add_address(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        with self.ipr() as ip:
            idx = ip.link_lookup(ifname=ifname)[0]
            ip.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def set_offloads(self, ifname: str, settings: Sequence[str] = OFFLOADS_OFF) -> None:
        r = self.run(["ethtool", "-K", ifname, *settings], check=False)
        if r.returncode not in (0, 76):  # 76: some features cannot change on veth, fine
            log.warning("ethtool -K %s in %s: %s", ifname, self.ns, r.stderr.strip())

    def __repr__(self) -> str:
        return f"<Host {self.name} ns={self.ns} addr={self.address}>"


class Topology:
    """A server, N clients and a wan host between them (see module doc).

    clients: number of client hosts (client1..clientN).
    server: 1 for a server host, 0 for none.
    wan: True = the emulator joins the two sides; False = a plain kernel bridge.
    impair / to_server / to_client: emulator impairments (dicts with the keys of
        kcpvpn_lab._emulator.EMULATOR_PARAMS, e.g. {"delay_ms": 20, "loss": 0.05});
        `impair` applies to both directions, the others override one direction.
    bridges: names of hosts that get a bridge `br0` (for TAP tunnels).
    lan_hosts: {host name: count}: LAN hosts (`<host>-lan<j>`) attached to that
        host's br0, addressed from LAN_NET (one subnet: bridged LANs share it).
    seed: emulator seed (random if None; see `.seed`).
    emulator_realtime: SCHED_FIFO priority of the emulator's threads (0 = normal
        scheduling). Real-time by default so that its delays stay exact on a
        loaded machine; the kernel's RT throttling still leaves 5% to others.
    """

    def __init__(
        self,
        clients: int = 1,
        server: int = 1,
        wan: bool = True,
        impair: Mapping[str, Any] | None = None,
        to_server: Mapping[str, Any] | None = None,
        to_client: Mapping[str, Any] | None = None,
        bridges: Iterable[str] = (),
        lan_hosts: Mapping[str, int] | None = None,
        seed: int | None = None,
        mtu: int = 1500,
        ipv6: bool = False,
        keep_logs: bool = False,
        emulator_realtime: int = 10,
        middlebox: bool = False,
    ):
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"clients={clients}: use 1..{MAX_CLIENTS}")
        if server not in (0, 1):
            raise ValueError(f"server={server}: the lab has 0 or 1 server host")
        self.n_clients = clients
        self.n_server = server
        self.wan_emulated = wan
        self.to_server = dict(to_server if to_server is not None else impair or {})
        self.to_client = dict(to_client if to_client is not None else impair or {})
        if wan:
            # Refuse bad impairments (ValueError with the emulator's reason) before
            # anything is built; constructing the emulator opens nothing.
            LinkEmulator("a", "b", self.to_server, self.to_client)
        self.bridges = list(bridges)
        self.lan_hosts = dict(lan_hosts or {})
        for h in self.lan_hosts:
            if h not in self.bridges:
                self.bridges.append(h)
        self.seed = seed if seed is not None else secrets.randbits(32)
        self.mtu = mtu
        self.ipv6 = ipv6
        self.keep_logs = keep_logs
        self.emulator_realtime = emulator_realtime
        self.middlebox = middlebox
        if middlebox and (ipv6 or not wan or not server):
            raise ValueError("middlebox=True: an IPv4 topology with an emulated wan and a server")

        self.id = secrets.token_hex(3)
        self.prefix = f"{PREFIX}{self.id}"
        self.run_dir = RUN_ROOT / self.id
        self.hosts: dict[str, Host] = {}
        self.processes: list[HostProcess] = []
        self.emulator: EmulatorClient | None = None
        self.emulator_proc: HostProcess | None = None
        self.emulator_ifaces: tuple[str, str] | None = None
        self._namespaces: list[str] = []
        self._old_sigterm: Any = None
        self._active = False
        self._owner_pid = -1

    # --- access -----------------------------------------------------------------
    @property
    def server(self) -> Host:
        return self.hosts["server"]

    @property
    def clients(self) -> list[Host]:
        return [self.hosts[f"client{i}"] for i in range(1, self.n_clients + 1)]

    def client(self, i: int) -> Host:
        """client(1) is the first client."""
        return self.hosts[f"client{i}"]

    @property
    def wan(self) -> Host:
        return self.hosts["wan"]

    @property
    def mbox(self) -> Host:
        """The middlebox (middlebox=True)."""
        return self.hosts["mbox"]

    def middlebox_counters(self) -> dict[str, int]:
        """Packets each middlebox rule matched: invalid, udp, established,
        new_syn, other (dropped: invalid, udp, other)."""
        out = self.mbox.run(["nft", "-j", "list", "counters", "table", "inet", "mbox"]).stdout
        doc = json.loads(out)
        return {
            c["counter"]["name"].removeprefix("n_"): int(c["counter"]["packets"])
            for c in doc["nftables"]
            if "counter" in c
        }

    def flush_conntrack(self) -> None:
        """The middlebox forgets every flow and NAT mapping (as one that
        reboots, or times its entries out)."""
        from pyroute2 import Conntrack

        with nsutil.inside(self.mbox.ns), Conntrack() as ct:
            ct.flush()

    def conntrack_entries(self) -> list[str]:
        """The middlebox's conntrack entries, one line each (for messages)."""
        from pyroute2 import Conntrack

        with nsutil.inside(self.mbox.ns), Conntrack() as ct:
            return [str(e) for e in ct.dump_entries()]

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r}; hosts: {', '.join(self.hosts)}") from None

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    # --- life cycle ---------------------------------------------------------------
    def __enter__(self) -> Topology:
        self.up()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.down(failed=exc_type is not None)

    def up(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("the lab needs root (network namespaces, veths, AF_PACKET)")
        self._owner_pid = os.getpid()
        self._install_signal_handler()
        self._active = True
        _live.add(self)
        try:
            self._build()
        except BaseException:
            self.down(failed=True)
            raise

    def down(self, failed: bool = False) -> None:
        """Stop every process (by PID), delete every namespace. Safe to call twice."""
        if not self._active or os.getpid() != self._owner_pid:
            return  # never from a forked child: the namespaces belong to the parent
        self._active = False
        errors = []
        for p in reversed(self.processes):
            try:
                p.stop()
            except Exception as e:  # keep tearing down the rest
                errors.append(f"stopping {p}: {e}")
        for ns in reversed(self._namespaces):
            try:
                _remove_namespace(ns)
            except Exception as e:
                errors.append(f"removing {ns}: {e}")
        self._namespaces.clear()
        _live.discard(self)
        self._restore_signal_handler()
        if failed or self.keep_logs:
            log.warning("lab %s: logs kept in %s (until `lab clean`)", self.prefix, self.run_dir)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if errors:
            raise RuntimeError("lab teardown was incomplete: " + "; ".join(errors))

    def _install_signal_handler(self) -> None:
        # SIGTERM would kill the process without unwinding: turn it into an
        # exception so __exit__ runs. Only the main thread may set handlers.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        owner = os.getpid()

        def on_term(signum: int, frame: Any) -> None:
            if os.getpid() != owner:
                # A forked helper (pyroute2 forks for netns work) inherits this
                # handler: it must just die, never unwind into our teardown.
                os._exit(128 + signum)
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _restore_signal_handler(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # --- building --------------------------------------------------------------------
    def _new_host(self, name: str, role: str) -> Host:
        ns = f"{self.prefix}-{role}"
        netns.create(ns)
        self._namespaces.append(ns)
        host = Host(self, name, ns)
        self.hosts[name] = host
        if not self.ipv6 or name == "wan":
            # Before any interface exists, so none gets a link-local address
            # that would chatter (router/neighbour solicitations) on the link.
            for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                host.sysctl(key, 1)
        with host.ipr() as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        return host

    def _build(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        (self.run_dir / "owner").write_text(f"{me} {_proc_start_time(me)}\n")

        wan = self._new_host("wan", "wan")
        edge: list[Host] = []
        if self.n_server:
            edge.append(self._new_host("server", "srv"))
        if self.middlebox:
            edge.append(self._new_host("mbox", "mb"))
        else:
            for i in range(1, self.n_clients + 1):
                edge.append(self._new_host(f"client{i}", f"c{i}"))

        client_ports, server_ports = [], []
        with wan.ipr() as ip:
            for h in edge:
                port = {"server": "s0", "mbox": "m0"}.get(h.name) or f"c{h.name[6:]}"
                (server_ports if h.name == "server" else client_ports).append(port)
                ip.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": h.ns})
                idx = ip.link_lookup(ifname=port)[0]
                ip.link("set", index=idx, mtu=self.mtu, state="up")
            if not self.wan_emulated:
                self._bridge(ip, "brw", client_ports + server_ports)
            else:
                side_a = client_ports[0]
                if len(client_ports) > 1:
                    # Clients share a segment; one veth pair hands it to the emulator.
                    ip.link("add", ifname="xa", kind="veth", peer={"ifname": "ea"})
                    for name in ("xa", "ea"):
                        ip.link(
                            "set", index=ip.link_lookup(ifname=name)[0], mtu=self.mtu, state="up"
                        )
                    self._bridge(ip, "brc", [*client_ports, "xa"])
                    side_a = "ea"
                side_b = server_ports[0] if server_ports else None
                if side_b is None:
                    raise ValueError("an emulated wan needs a server host (server=1) or wan=False")
                self.emulator_ifaces = (side_a, side_b)

        for h in edge:
            if h.name == "server":
                h.address = SERVER_ADDR
            elif h.name == "mbox":
                h.address = MBOX_ADDR
            else:
                h.address = WAN_NET[10 + int(h.name[6:])]
            with h.ipr() as ip:
                idx = ip.link_lookup(ifname="eth0")[0]
                ip.link("set", index=idx, mtu=self.mtu, state="up")
                ip.addr("add", index=idx, address=str(h.address), prefixlen=WAN_NET.prefixlen)

        if self.wan_emulated:
            for h in edge:
                h.set_offloads("eth0")
            for port in [
                *client_ports,
                *server_ports,
                *(["xa", "ea"] if len(client_ports) > 1 else []),
            ]:
                wan.set_offloads(port)
            self._static_arp(edge)

        if self.middlebox:
            self._build_middlebox()
        self._build_bridges()
        if self.wan_emulated:
            self.start_emulator()

    def _build_middlebox(self) -> None:
        mbox = self.mbox
        mbox.sysctl("net.ipv4.ip_forward", 1)
        with mbox.ipr() as ip:
            ip.link("add", ifname="lan", kind="bridge", br_stp_state=0)
            lan = ip.link_lookup(ifname="lan")[0]
            ip.link("set", index=lan, mtu=self.mtu, state="up")
            ip.addr("add", index=lan, address=str(MB_NET[1]), prefixlen=MB_NET.prefixlen)
        for i in range(1, self.n_clients + 1):
            c = self._new_host(f"client{i}", f"c{i}")
            with mbox.ipr() as ip:
                port = f"l{i}"
                ip.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": c.ns})
                idx = ip.link_lookup(ifname=port)[0]
                ip.link("set", index=idx, mtu=self.mtu, master=ip.link_lookup(ifname="lan")[0])
                ip.link("set", index=idx, state="up")
            c.address = MB_NET[10 + i]
            c.prefixlen = MB_NET.prefixlen
            with c.ipr() as ip:
                idx = ip.link_lookup(ifname="eth0")[0]
                ip.link("set", index=idx, mtu=self.mtu, state="up")
                ip.addr("add", index=idx, address=str(c.address), prefixlen=MB_NET.prefixlen)
                ip.route("add", dst="0.0.0.0/0", gateway=str(MB_NET[1]))
            c.set_offloads("eth0")
            mbox.set_offloads(f"l{i}")
        mbox.run(["nft", "-f", "-"], input=MIDDLEBOX_RULES.encode())
        # Strict conntrack (its settings exist once the rules loaded it):
        # window tracking on, no pick-up of flows seen mid-stream.
        mbox.sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", 0)
        mbox.sysctl("net.netfilter.nf_conntrack_tcp_loose", 0)

    @staticmethod
    def _bridge(ip: IPRoute, name: str, ports: Sequence[str]) -> None:
        ip.link("add", ifname=name, kind="bridge", br_stp_state=0)
        br = ip.link_lookup(ifname=name)[0]
        for port in ports:
            ip.link("set", index=ip.link_lookup(ifname=port)[0], master=br)
        ip.link("set", index=br, state="up")

    def _static_arp(self, hosts: Sequence[Host]) -> None:
        macs = {h.name: h.mac() for h in hosts}
        for h in hosts:
            with h.ipr() as ip:
                idx = ip.link_lookup(ifname="eth0")[0]
                for other in hosts:
                    if other is not h:
                        ip.neigh(
                            "replace",
                            dst=str(other.address),
                            lladdr=macs[other.name],
                            ifindex=idx,
                            state=0x80,  # NUD_PERMANENT
                        )

    def _build_bridges(self) -> None:
        lan_index = 100
        for name in self.bridges:
            host = self.host(name)
            with host.ipr() as ip:
                ip.link("add", ifname="br0", kind="bridge", br_stp_state=0)
                ip.link("set", index=ip.link_lookup(ifname="br0")[0], mtu=self.mtu, state="up")
            for j in range(1, self.lan_hosts.get(name, 0) + 1):
                role = f"{'srv' if name == 'server' else name.replace('client', 'c')}l{j}"
                lan = self._new_host(f"{name}-lan{j}", role)
                with host.ipr() as ip:
                    port = f"l{j}"
                    ip.link(
                        "add",
                        ifname=port,
                        kind="veth",
                        peer={"ifname": "eth0", "net_ns_fd": lan.ns},
                    )
                    idx = ip.link_lookup(ifname=port)[0]
                    ip.link("set", index=idx, mtu=self.mtu, master=ip.link_lookup(ifname="br0")[0])
                    ip.link("set", index=idx, state="up")
                lan.address = LAN_NET[lan_index]
                lan.prefixlen = LAN_NET.prefixlen
                lan_index += 1
                with lan.ipr() as ip:
                    idx = ip.link_lookup(ifname="eth0")[0]
                    ip.link("set", index=idx, mtu=self.mtu, state="up")
                    ip.addr("add", index=idx, address=str(lan.address), prefixlen=LAN_NET.prefixlen)

    # --- the emulator ------------------------------------------------------------------
    def start_emulator(self, timeout: float = 15.0) -> None:
        """Start the emulator process in the wan namespace (done by `up` when wan=True)."""
        if self.emulator_ifaces is None:
            raise RuntimeError("this topology has no emulated wan (wan=False)")
        a, b = self.emulator_ifaces
        control = self.run_dir / "emulator.sock"
        self.emulator_proc = self.wan.popen(
            [
                sys.executable,
                "-m",
                "kcpvpn_lab.emulator",
                "--a",
                a,
                "--b",
                b,
                "--a-to-b",
                json.dumps(self.to_server),
                "--b-to-a",
                json.dumps(self.to_client),
                "--seed",
                str(self.seed),
                "--control",
                str(control),
                "--stats-file",
                str(self.run_dir / "emulator-stats.json"),
                "--realtime",
                str(self.emulator_realtime),
            ],
            name="emulator",
        )
        client = EmulatorClient(control)
        deadline = time.monotonic() + timeout
        while True:
            if not self.emulator_proc.alive():
                raise RuntimeError(f"the emulator exited at start:\n{self.emulator_proc.log()}")
            try:
                client.stats()
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the emulator did not answer within {timeout} s:\n"
                        f"{self.emulator_proc.log()}"
                    ) from None
                time.sleep(0.05)
        self.emulator = client

    def impair(
        self,
        both: Mapping[str, Any] | None = None,
        to_server: Mapping[str, Any] | None = None,
        to_client: Mapping[str, Any] | None = None,
    ) -> None:
        """Change impairments live (a full set per direction; missing keys are off)."""
        if self.emulator is None:
            raise RuntimeError("no emulator is running in this topology")
        ts = to_server if to_server is not None else both
        tc = to_client if to_client is not None else both
        if ts is not None:
            self.emulator.set("a_to_b", dict(ts))
            self.to_server = dict(ts)
        if tc is not None:
            self.emulator.set("b_to_a", dict(tc))
            self.to_client = dict(tc)

    def emulator_stats(self) -> dict[str, Any]:
        """Counters per direction: {"to_server": {...}, "to_client": {...}, "running", "error"}."""
        if self.emulator is None:
            raise RuntimeError("no emulator is running in this topology")
        s = self.emulator.stats()
        return {
            "to_server": s["a_to_b"],
            "to_client": s["b_to_a"],
            "running": s["running"],
            "error": s["error"],
        }


# Topologies still up, torn down at interpreter exit if their owner forgot.
_live: set[Topology] = set()


def _teardown_live() -> None:
    for t in list(_live):
        with contextlib.suppress(Exception):
            t.down(failed=True)


atexit.register(_teardown_live)


def _remove_namespace(ns: str) -> None:
    # Processes still inside keep the namespace alive after the name is gone:
    # stop any the lab missed (they can only be the lab's own).
    for pid in _namespace_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        netns.remove(ns)


def _namespace_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(x) for x in r.stdout.split() if x.isdigit()] if r.returncode == 0 else []


def lab_namespaces() -> list[str]:
    """Every namespace that carries the lab's prefix."""
    return sorted(n for n in netns.listnetns() if n.startswith(PREFIX))


def clean(force: bool = False) -> list[str]:
    """Remove leftovers of crashed runs: namespaces named `kvl<id>-*` (and their
    processes) and run directories whose owning process is gone. With
    `force`, also those of live runs. Returns the namespaces removed."""
    removed = []
    for ns in lab_namespaces():
        run_id = ns[len(PREFIX) :].split("-", 1)[0]
        if not force and _owner_alive(run_id):
            continue
        _remove_namespace(ns)
        removed.append(ns)
    if RUN_ROOT.is_dir():
        for d in RUN_ROOT.iterdir():
            # A run younger than a minute may still be writing its owner file.
            young = time.time() - d.stat().st_mtime < 60
            if d.is_dir() and (force or (not young and not _owner_alive(d.name))):
                shutil.rmtree(d, ignore_errors=True)
    return removed
