"""The server's side of identity mode, kept apart from its handshake policy.

The engine admits only the listed peers and rewrites each request from the
peer entry (the client id, and the fixed address if there is one), so the
server's usual policy (server.py `_decide`) then runs on what the operator
configured, not on what the client asked for. What is left for the control
plane: load the key and peers, keep fixed addresses out of the pool's
hands, and let the no-pool address policy accept them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from . import errors
from .config import ServerConfig, server_peers
from .keys import PeerEntry, encode_key, read_private_key


@dataclass(frozen=True)
class Identity:
    private_key: bytes
    peers: tuple[PeerEntry, ...]

    @property
    def public_key(self) -> str:
        from . import _engine

        return encode_key(_engine.public_key(self.private_key))


def identity_of(cfg: ServerConfig) -> Identity | None:
    """The server's identity (None in simple mode). StartupError when the
    key or peers cannot be read (validation said so already, but files may
    change between validation and start, and on SIGHUP)."""
    if not cfg.identity:
        return None
    try:
        key = read_private_key(cfg.transport.private_key_file or "")
    except ValueError as e:
        raise errors.StartupError(str(e)) from None
    peers, problems = server_peers(cfg)
    if problems:
        raise errors.StartupError("; ".join(problems))
    return Identity(key, tuple(peers))


def engine_args(identity: Identity | None) -> dict[str, Any]:
    """The keyword arguments of Endpoint.server / server_tcp."""
    if identity is None:
        return {}
    return {
        "private_key": identity.private_key,
        "peers": [p.engine_spec() for p in identity.peers],
    }


def fixed_addresses(identity: Identity | None) -> list[str]:
    """Addresses that belong to one peer each: the pool never hands them to
    anyone else, and grants them to their peer."""
    if identity is None:
        return []
    return [p.address for p in identity.peers if p.address]


def fixed_networks(
    identity: Identity | None,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Without a pool, the client-chosen addresses the server accepts
    (--allowed-client-ips) include the peers' fixed addresses: the operator
    chose those. (Only the engine can put them in a request.)"""
    return [ipaddress.ip_network(a) for a in fixed_addresses(identity)]


def describe(identity: Identity | None) -> str:
    if identity is None:
        return ""
    return f", identity mode: public key {identity.public_key}, {len(identity.peers)} peers"
