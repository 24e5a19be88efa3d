"""The systems the bench compares, and how each one is set up between the
server and client1 of a topology: no tunnel, kcpvpn (several flag sets,
fake TCP among them), wireguard-go."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from ..process import HostProcess
from ..topology import Host, Topology
from ..vpn import start_client, start_server, wait_reachable
from . import wireguard

KCPVPN_SERVER_IP = "192.168.88.1"
KCPVPN_SERVER_FLAGS = ("--local-ip", KCPVPN_SERVER_IP, "--assignable-ips", "192.168.88.0/24")


@dataclass(frozen=True)
class SystemSpec:
    name: str
    kind: str  # "none" | "kcpvpn" | "wireguard-go"
    label: str
    flags: tuple[str, ...] = ()
    scenarios: frozenset[str] = frozenset({"clean", "lossy", "load"})
    lossy_tcp: bool = True  # False: only pings on the lossy link
    colour: str = "black"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "flags": list(self.flags),
            "scenarios": sorted(self.scenarios),
            "lossy_tcp": self.lossy_tcp,
        }


NONE = SystemSpec("none", "none", "no tunnel", colour="grey")
KCPVPN = SystemSpec("kcpvpn", "kcpvpn", "kcpvpn (defaults)", colour="tab:blue")
KCPVPN_BARE = SystemSpec(
    "kcpvpn-bare",
    "kcpvpn",
    "kcpvpn --crypt none --ds 0 --ps 0 --kcp-mode fast3",
    flags=("--crypt", "none", "--ds", "0", "--ps", "0", "--kcp-mode", "fast3"),
    scenarios=frozenset({"clean"}),
    colour="tab:cyan",
)
KCPVPN_NO_RAPID = SystemSpec(
    "kcpvpn-no-rapid-fec",
    "kcpvpn",
    "kcpvpn --no-rapid-fec",
    flags=("--no-rapid-fec",),
    scenarios=frozenset({"lossy"}),
    lossy_tcp=False,
    colour="tab:green",
)
# The tunnel's entry as one FIFO (wave 1's behaviour): the reference for
# latency under load.
KCPVPN_FIFO = SystemSpec(
    "kcpvpn-fifo",
    "kcpvpn",
    "kcpvpn --no-flow-queueing",
    flags=("--no-flow-queueing",),
    scenarios=frozenset({"load"}),
    colour="tab:purple",
)
# Fake TCP: the same tunnel over raw-socket TCP segments (--tcp).
KCPVPN_TCP = SystemSpec(
    "kcpvpn-tcp",
    "kcpvpn",
    "kcpvpn --tcp",
    flags=("--tcp",),
    scenarios=frozenset({"clean", "lossy"}),
    colour="tab:orange",
)
WIREGUARD = SystemSpec("wireguard-go", "wireguard-go", "wireguard-go", colour="tab:red")

SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in (NONE, KCPVPN, KCPVPN_BARE, KCPVPN_NO_RAPID, KCPVPN_FIFO, KCPVPN_TCP, WIREGUARD)
}


@dataclass
class Tunnel:
    """One system up between `client` and `server`: traffic to `server_ip`
    from `client` crosses it. `pids` are the daemons whose CPU time counts."""

    spec: SystemSpec
    client: Host
    server: Host
    server_ip: str
    procs: list[HostProcess] = field(default_factory=list)
    wg: wireguard.WireGuardPair | None = None
    commands: list[str] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        if self.wg is not None:
            return self.wg.pids
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        if self.wg is not None:
            return self.wg.alive()
        return all(p.alive() for p in self.procs)

    def logs(self, tail: int = 2000) -> str:
        procs = list(self.wg.procs.values()) if self.wg is not None else self.procs
        return "\n".join(f"--- {p.argv[0]} ({p.pid}):\n{p.log()[-tail:]}" for p in procs)

    def close(self) -> None:
        if self.wg is not None:
            self.wg.down()
        for p in reversed(self.procs):  # the client first: it says goodbye
            with contextlib.suppress(Exception):
                p.stop(timeout=5)


def set_up(spec: SystemSpec, topo: Topology, extra_kcpvpn_flags: tuple[str, ...] = ()) -> Tunnel:
    """Start `spec` between topo.server and topo.client(1); raises (having
    stopped what it started) when it does not come up."""
    client, server = topo.client(1), topo.server
    if spec.kind == "none":
        return Tunnel(spec, client, server, str(server.address))
    if spec.kind == "kcpvpn":
        flags = (*spec.flags, *extra_kcpvpn_flags)
        tun = Tunnel(spec, client, server, KCPVPN_SERVER_IP)
        try:
            srv = start_server(server, *KCPVPN_SERVER_FLAGS, *flags)
            tun.procs.append(srv)
            tun.commands.append(f"[server] {' '.join(srv.argv)}")
            cli = start_client(client, server, *flags)
            tun.procs.append(cli)
            tun.commands.append(f"[client] {' '.join(cli.argv)}")
            wait_reachable(client, KCPVPN_SERVER_IP, timeout=20)
        except BaseException:
            tun.close()
            raise
        return tun
    if spec.kind == "wireguard-go":
        pair = wireguard.WireGuardPair(topo, client).up()
        tun = Tunnel(spec, client, server, wireguard.SERVER_IP, wg=pair)
        tun.commands = list(pair.commands)
        try:
            wait_reachable(client, wireguard.SERVER_IP, timeout=20)
        except BaseException:
            tun.close()
            raise
        return tun
    raise ValueError(f"unknown system kind {spec.kind!r}")
