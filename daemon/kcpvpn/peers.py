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
import logging
from dataclasses import dataclass
from typing import Any

from . import errors
from .config import ServerConfig, allowed_networks, server_peers
from .keys import PeerEntry, encode_key, read_private_key

log = logging.getLogger("kcpvpn.server")

# The server's configuration fields this module reloads on SIGHUP (the peers
# file may change without its path changing, so they are read every time).
RELOADED = ("peers", "peers_file")


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


def reload(server: Any, new: ServerConfig) -> bool:
    """SIGHUP in identity mode: reads the peers again and gives them to the
    engine; the session of a peer that is gone, or whose key or fixed address
    changed, is closed (so a removed key is revoked at once, and a changed
    entry applies when the client handshakes again). The private key is only
    read at start. True if the peers changed."""
    old: Identity | None = server.identity
    if old is None:
        if new.identity:
            log.warning("SIGHUP: turning identity mode on takes a restart")
        return False
    try:
        ident = identity_of(new)
    except errors.StartupError as e:
        log.error("SIGHUP: the peers stay as they were: %s", e)
        return False
    if ident is None or ident.private_key != old.private_key:
        log.warning(
            "SIGHUP: a new --private-key-file (or none) takes a restart; "
            "the peers stay as they were"
        )
        return False
    if ident.peers == old.peers:
        return False
    server.endpoint.set_peers(ident.private_key, [p.engine_spec() for p in ident.peers])
    before = {p.name: p for p in old.peers}
    after = {p.name: p for p in ident.peers}
    # Sessions not yet confirmed (where the server keeps them apart) too.
    held = [*server.clients.values(), *getattr(server, "unconfirmed", {}).values()]
    for c in held:
        was, now = before.get(c.client_id), after.get(c.client_id)
        if was is None or (
            now is not None and (now.public_key, now.address) == (was.public_key, was.address)
        ):
            continue
        log.info(
            "SIGHUP: closing the session of peer %s: %s",
            c.client_id,
            "it is no longer listed" if now is None else "its entry changed",
        )
        server.endpoint.close(c.session_id)
    server.identity = ident
    server.pool.set_kept(fixed_addresses(ident))
    base = server.cfg.allowed_client_ips
    server.allowed = (allowed_networks(base) if base else []) + fixed_networks(ident)
    log.info("SIGHUP: %d peers (were %d)", len(ident.peers), len(old.peers))
    return True
