"""Shared set-up for the claims: real daemons in lab hosts, status sockets in
the topology's run directory (parallel runs never collide)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kcpvpn_lab.process import HostProcess
from kcpvpn_lab.topology import Host, Topology
from kcpvpn_lab.vpn import (
    client_address,
    start_client,
    start_server,
    status_socket,
    wait_reachable,
)

SERVER_IP = "192.168.88.1"
POOL = "192.168.88.0/24"


@dataclass
class Tunnel:
    topo: Topology
    server: HostProcess
    client: HostProcess
    port: int
    server_sock: str
    client_sock: str
    server_ip: str  # tunnel addresses
    client_ip: str
    client_index: int = 1

    @property
    def server_host(self) -> Host:
        return self.topo.server

    @property
    def client_host(self) -> Host:
        return self.topo.client(self.client_index)


def open_tun(
    topo: Topology,
    server_flags: tuple[str, ...] = (),
    client_flags: tuple[str, ...] = (),
    client: int = 1,
    port: int = 4000,
    server_ip: str = SERVER_IP,
    pool: str = POOL,
    prefix: str = "kvs",
) -> Tunnel:
    """A TUN tunnel between the server host and client host `client`, ready to
    carry traffic (one ping has crossed it)."""
    ssock = status_socket(topo.server, f"server{port}")
    srv = start_server(
        topo.server,
        "--local-ip",
        server_ip,
        "--assignable-ips",
        pool,
        "--vni-name-prefix",
        prefix,
        "--status-socket",
        ssock,
        *server_flags,
        port=port,
    )
    first = Tunnel(topo, srv, srv, port, ssock, "", server_ip, "", client)
    return add_client(first, client, client_flags)


def add_client(tun: Tunnel, client: int, client_flags: tuple[str, ...] = ()) -> Tunnel:
    """Client host `client` connected to the server of `tun`, ready to carry traffic."""
    host = tun.topo.client(client)
    csock = status_socket(host, f"client{tun.port}")
    cli = start_client(
        host, tun.topo.server, "--status-socket", csock, *client_flags, port=tun.port
    )
    new = Tunnel(
        tun.topo,
        tun.server,
        cli,
        tun.port,
        tun.server_sock,
        csock,
        tun.server_ip,
        client_address(cli),
        client,
    )
    wait_reachable(host, tun.server_ip)
    return new


@pytest.fixture
def tun(topo: Topology) -> Tunnel:
    """One client, one server, TUN mode, over the lab's unimpaired emulated link."""
    return open_tun(topo)
