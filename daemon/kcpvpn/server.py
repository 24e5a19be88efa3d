"""`kcpvpn server`: answers handshakes, gives each client an address and its
own interface, and supervises the native data path."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _engine, errors, peers, tun
from .config import ServerConfig, allowed_networks, client_id_problem
from .supervisor import (
    Stopper,
    engine_params,
    event_loop,
    open_socket,
    open_status,
    stretch,
)

log = logging.getLogger("kcpvpn.server")

# Link groups of this server's interfaces (per process, so two servers in one
# namespace never touch each other's): every live interface is in the first,
# released ones move to the second until they are deleted together.
_GROUP_BASE = 0x6B760000


def _groups(pid: int) -> tuple[int, int]:
    g = (_GROUP_BASE + 2 * pid) & 0xFFFFFFFF
    return g, (g + 1) & 0xFFFFFFFF


IP_MODE_SERVER = _engine.IP_MODES["server"]
IP_MODE_CLIENT = _engine.IP_MODES["client"]
IP_MODE_NONE = _engine.IP_MODES["none"]


@dataclass
class Client:
    session_id: int
    client_id: str
    iface: tun.Interface
    ip: str | None
    ip_mode: int
    remote: str
    since: float = field(default_factory=time.time)


@dataclass
class Unconfirmed:
    """An accepted session whose client has not yet proved it holds the keys
    (its first authenticated datagram). It has an address set aside and
    nothing else: no interface, no hook, and the client's older session
    keeps running, so a replayed message 1 changes nothing."""

    session_id: int
    client_id: str
    ip: str | None
    ip_mode: int
    remote: str
    mtu: int


def _is_client(c: Client | Unconfirmed, cid: str, remote: str) -> bool:
    """Whether session `c` is of the client `cid` at `remote`: the same
    non-empty id, or the same address and port (one socket has one session)."""
    return bool(cid and c.client_id == cid) or c.remote == remote


def _fmt_addr(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self, cfg: ServerConfig, reload: Callable[[], ServerConfig] | None = None) -> None:
        from .hooks import HookRunner

        self.cfg = cfg
        self._reload_config = reload
        t = cfg.transport
        self.tap = cfg.vni_mode == "tap"
        if cfg.bridge:
            try:
                tun.require_bridge(cfg.bridge)
            except tun.InterfaceError as e:
                raise errors.StartupError(f"--bridge: {e}") from None
        self.identity = peers.identity_of(cfg)
        self.pool = self._new_pool(cfg)
        self.allowed = allowed_networks(cfg.allowed_client_ips) if cfg.allowed_client_ips else []
        self.allowed += peers.fixed_networks(self.identity)
        self.hooks = HookRunner(cfg.hook_dir) if cfg.hook_dir else None
        self.clients: dict[int, Client] = {}
        self.unconfirmed: dict[int, Unconfirmed] = {}
        # Released clients whose interface and address go at the end of the
        # current batch of events (_drop_released), all interfaces at once.
        self._released: list[Client] = []
        self._group, self._group_released = _groups(os.getpid())
        # One netlink socket for every interface (opening one per call costs
        # more than the call).
        self.ipr = tun.IPRoute()
        self.psk = stretch(t.secret, t.network)
        self.sock: socket.socket | None = None
        if t.tcp:
            self.endpoint, self.listen = self._start_tcp(cfg)
        else:
            self.sock = open_socket(t.ip, t.port, bind=True, sockbuf=t.sockbuf, dscp=t.dscp)
            self.endpoint = _engine.Endpoint.server(
                os.dup(self.sock.fileno()),
                self.psk,
                engine_params(cfg),
                **peers.engine_args(self.identity),
            )
            host, port = self.sock.getsockname()[:2]
            self.listen = _fmt_addr((host, port))
        self.started = time.time()
        log.info(
            "listening on %s (%s mode%s%s)",
            self.listen,
            cfg.vni_mode,
            ", fake TCP" if t.tcp else "",
            peers.describe(self.identity),
        )

    def _start_tcp(self, cfg: ServerConfig) -> tuple[_engine.Endpoint, str]:
        """Fake TCP: raw sockets for the port (the engine also holds the port
        with a socket that keeps the host's TCP stack from resetting the flows)."""
        t = cfg.transport
        if t.port == 0:
            raise errors.StartupError("--tcp needs a fixed --port (clients must know it)")
        host = t.ip or ""
        v4 = host in ("", "0.0.0.0") or ":" not in host
        v6 = host in ("", "::") or ":" in host
        ep = _engine.Endpoint.server_tcp(
            t.port,
            self.psk,
            engine_params(cfg),
            ipv4=v4,
            ipv6=v6,
            dscp=t.dscp,
            sockbuf=t.sockbuf,
            **peers.engine_args(self.identity),
        )
        return ep, _fmt_addr((host or "0.0.0.0", t.port)) + "/tcp"

    def _new_pool(self, cfg: ServerConfig):
        from .ippool import IpPool

        return IpPool(
            cfg.assignable_ips,
            exclude=[cfg.local_ip] if cfg.local_ip else [],
            tun_mode=not self.tap,
            keep=peers.fixed_addresses(self.identity),
        )

    # -- reload (SIGHUP) ----------------------------------------------------
    RELOADABLE = ("log_level", "hook_dir", "assignable_ips", "allowed_client_ips", "max_clients")

    def reload(self) -> None:
        """SIGHUP: reads the configuration again and applies what can change
        without dropping a session; says what changed, and what needs a restart."""
        from .hooks import HookRunner

        if self._reload_config is None:
            log.info("SIGHUP: no configuration to read again")
            return
        try:
            new = self._reload_config()
        except Exception as e:  # ConfigError and the like: keep running as is
            log.error("SIGHUP: the configuration is not valid, nothing changed: %s", e)
            return
        old = self.cfg
        changed = [
            f.name
            for f in dataclasses.fields(ServerConfig)
            if getattr(old, f.name) != getattr(new, f.name) and f.name not in peers.RELOADED
        ]
        applied: list[str] = []
        later: list[str] = []
        for name in changed:
            (applied if name in self.RELOADABLE else later).append(name)
        if "log_level" in applied:
            logging.getLogger().setLevel(new.log_level.upper())
        if "hook_dir" in applied:
            if self.hooks:
                self.hooks.stop(grace=5)
            self.hooks = HookRunner(new.hook_dir) if new.hook_dir else None
        if "assignable_ips" in applied:
            pool = self._new_pool(new)
            held: list[Client | Unconfirmed] = [*self.clients.values(), *self.unconfirmed.values()]
            for c in held:
                if c.ip and c.ip_mode == IP_MODE_SERVER:
                    pool.reserve(c.ip)  # kept while its session lasts
            self.pool = pool
        if "allowed_client_ips" in applied:
            self.allowed = (
                allowed_networks(new.allowed_client_ips) if new.allowed_client_ips else []
            ) + peers.fixed_networks(self.identity)
        keep = {n: getattr(old, n) for n in later}
        self.cfg = dataclasses.replace(new, **keep)
        peers_changed = peers.reload(self, new)
        if applied:
            log.info(
                "SIGHUP: applied %s",
                ", ".join(f"{n} = {getattr(new, n)!r}" for n in applied),
            )
        if later:
            log.warning("SIGHUP: %s changed; that takes a restart", ", ".join(later))
        if not changed and not peers_changed:
            log.info("SIGHUP: configuration unchanged")

    # -- handshake policy -------------------------------------------------
    def _refuse(self, req: _engine.HandshakeRequest, reason: str) -> None:
        log.warning("refused a client from %s: %s", _fmt_addr(req.peer), reason)
        self.endpoint.refuse(req, reason)

    def on_request(self, req: _engine.HandshakeRequest) -> None:
        """Decides on one client. Whatever goes wrong here refuses that client
        and leaves the server and every other session as they were."""
        try:
            self._decide(req)
        except Exception as e:
            log.exception("refused a client from %s: the server failed to set it up", req.peer)
            self._refuse(req, f"the server could not set up this client ({type(e).__name__})")

    def _same_client(self, cid: str, remote: str) -> list[Client]:
        """Live sessions a new one of this client replaces."""
        return [c for c in self.clients.values() if _is_client(c, cid, remote)]

    def _unconfirmed_of(self, cid: str, remote: str) -> list[Unconfirmed]:
        """Answered, unconfirmed sessions of this client."""
        return [u for u in self.unconfirmed.values() if _is_client(u, cid, remote)]

    def _decide(self, req: _engine.HandshakeRequest) -> None:
        """Answers an authenticated message 1. The session it starts is only
        set aside (an address, nothing else) until the client proves itself
        with its first datagram (_confirm): a replayed message 1 that was
        never seen gets an answer it cannot use, and changes nothing."""
        cid = req.client_id
        remote = _fmt_addr(req.peer)
        # The handshake decoder already refuses such ids; checked again here
        # because the id becomes part of a hook's path.
        why = client_id_problem(cid)
        if why:
            return self._refuse(req, why)
        olds = self._same_client(cid, remote)
        if len(self.clients) - len(olds) >= self.cfg.max_clients:
            return self._refuse(
                req, f"the server is full ({self.cfg.max_clients} clients, its --max-clients)"
            )
        mode = req.ip_mode
        ip: str | None = None
        # A client that connects again keeps its address: shared with its
        # live session until the new one is confirmed and takes it over.
        held: list[Client | Unconfirmed] = [*olds, *self._unconfirmed_of(cid, remote)]
        kept = {c.ip for c in held if c.ip}
        if mode == IP_MODE_SERVER:
            ip = min(kept, default=None)
            if ip is None:
                try:
                    ip = self.pool.allocate()
                except Exception as e:  # PoolExhausted or no pool
                    return self._refuse(req, str(e))
        elif mode == IP_MODE_CLIENT:
            ip = req.ip
            reason = self._client_ip_problem(ip)
            if not reason and ip not in kept:
                reason = self.pool.reserve(ip or "")
            if reason:
                return self._refuse(req, reason)
        try:
            self._accept(req, ip)
        except BaseException:
            self._give_back(ip)
            raise

    def _client_ip_problem(self, ip: str | None) -> str | None:
        """Without a pool, a client may only ask for an address the operator
        allowed: the server routes the address to the client, so any other
        one (its DNS resolver's, say) would divert the server's own traffic."""
        if not ip:
            return "no address given"
        if self.pool.range is not None:
            return None  # the pool decides
        if not self.allowed:
            return (
                f"the server takes no client-chosen address ({ip}): it has no --assignable-ips "
                "pool and no --allowed-client-ips"
            )
        a = ipaddress.ip_address(ip)
        if not any(a in n for n in self.allowed):
            nets = ", ".join(str(n) for n in self.allowed)
            return f"{ip} is outside the addresses the server allows ({nets})"
        return None

    def _offer(self, mtu: int, ip: str | None) -> _engine.Offer:
        cfg = self.cfg
        return _engine.Offer(
            tap=self.tap,
            mtu=mtu,
            full_frame_mtu=cfg.full_frame_mtu or (mtu + _engine.FRAME_HEADROOM),
            server_ip=cfg.local_ip,
            client_ip=ip,
            prefixlen=cfg.prefixlen,
        )

    def _accept(self, req: _engine.HandshakeRequest, ip: str | None) -> None:
        mtu = min(int(req.mtu), self.cfg.vni_mtu)
        try:
            # Checked before anything is set aside (e.g. an IPv6 netmask for
            # an IPv4 client address): InvalidParameter refuses the client.
            offer = self._offer(mtu, ip)
        except errors.InvalidParameter as e:
            self._give_back(ip)
            return self._refuse(req, f"the server's settings do not fit this client: {e}")
        try:
            session_id = self.endpoint.accept(req, offer)
        except errors.KcpvpnError as e:
            self._give_back(ip)
            log.warning("could not start a session for a client from %s: %s", req.peer, e)
            return
        self.unconfirmed[session_id] = Unconfirmed(
            session_id, req.client_id, ip, req.ip_mode, _fmt_addr(req.peer), mtu
        )
        log.debug(
            "answered client %s from %s; waiting for its first datagram",
            req.client_id or "(no id)",
            _fmt_addr(req.peer),
        )

    def _confirm(self, session_id: int) -> None:
        """The client of an accepted session proved it holds the keys: it
        replaces the client's older sessions and gets its interface."""
        u = self.unconfirmed.get(session_id)
        if u is None:
            return  # closed meanwhile
        # `u` stays listed as unconfirmed until it is a client, so the address
        # it shares with the sessions it replaces never goes back meanwhile.
        for old in self._same_client(u.client_id, u.remote):
            log.info(
                "client %s handshook again from %s; dropping its old session",
                u.client_id or "(no id)",
                u.remote,
            )
            self.endpoint.close(old.session_id)
            self._release(old, "replaced by a new connection")
            if old.ip and old.ip == u.ip:
                self._hand_over_address(old)
        # Earlier attempts of the same client that were answered but never
        # confirmed (their answers were lost) end here too.
        for other in [o for o in self._unconfirmed_of(u.client_id, u.remote) if o is not u]:
            log.info(
                "client %s handshook again from %s; forgetting its unconfirmed session",
                u.client_id or "(no id)",
                u.remote,
            )
            self._drop_unconfirmed(other)
        if len(self.clients) >= self.cfg.max_clients:
            log.warning("client %s from %s: the server filled up meanwhile", u.client_id, u.remote)
            return self._drop_unconfirmed(u)
        cfg = self.cfg
        try:
            iface = tun.open_tun(cfg.vni_name_prefix + "%d", tap=self.tap, offload=cfg.tun_offload)
            try:
                if self.tap:
                    tun.configure(
                        iface.name, mtu=u.mtu, bridge=cfg.bridge, ipr=self.ipr, group=self._group
                    )
                else:
                    tun.configure(
                        iface.name,
                        mtu=u.mtu,
                        local=cfg.local_ip,
                        peer=u.ip,
                        ipr=self.ipr,
                        group=self._group,
                    )
            except Exception:
                iface.close()
                raise
        except Exception as e:
            log.error("cannot set up an interface for client %r: %s", u.client_id, e)
            return self._drop_unconfirmed(u)
        try:
            self.endpoint.attach(session_id, os.dup(iface.fd))
        except errors.KcpvpnError as e:
            iface.close()
            log.warning("could not start the session of a client from %s: %s", u.remote, e)
            return self._drop_unconfirmed(u)
        c = Client(session_id, u.client_id, iface, u.ip, u.ip_mode, u.remote)
        self.clients[session_id] = c
        del self.unconfirmed[session_id]
        log.info(
            "client %s connected from %s: interface %s, address %s",
            u.client_id or "(no id)",
            c.remote,
            iface.name,
            u.ip or "none",
        )
        self._hook("connected", c)

    def _drop_unconfirmed(self, u: Unconfirmed) -> None:
        self.endpoint.close(u.session_id)
        self.unconfirmed.pop(u.session_id, None)
        self._give_back(u.ip)

    def _give_back(self, ip: str | None) -> None:
        """Returns `ip` to the pool unless a live or an unconfirmed session
        still uses it (a client that connected again shares its address with
        its old session until the new one is confirmed)."""
        if not ip:
            return
        users: list[Client | Unconfirmed] = [
            *self.clients.values(),
            *self.unconfirmed.values(),
            *self._released,
        ]
        if any(c.ip == ip for c in users):
            return
        self.pool.release(ip)

    def _hook(self, event: str, c: Client) -> None:
        if self.hooks:
            self.hooks.run(
                event,
                client_id=c.client_id,
                interface=c.iface.name,
                client_ip=c.ip,
                ip_mode=c.ip_mode,
                remote_addr=c.remote,
            )

    def _release(self, c: Client, why: str) -> None:
        """Forgets client `c`; its interface and address go with the batch
        (_drop_released). The address is given back only once its interface
        (and the route to it) is gone, so no new client gets it meanwhile."""
        self.clients.pop(c.session_id, None)
        if tun.set_group(self.ipr, c.iface.index, self._group_released):
            self._released.append(c)
        else:  # gone already (deleted by hand): nothing to batch
            c.iface.close()
            self._give_back(c.ip)
        log.info(
            "client %s disconnected (%s); released %s%s",
            c.client_id or "(no id)",
            why,
            c.iface.name,
            f" and {c.ip}" if c.ip else "",
        )
        self._hook("disconnected", c)

    def _hand_over_address(self, c: Client) -> None:
        """Moves a replaced session's address to its successor at once: the
        address (and the route to it) leaves the old interface now instead of
        with the batch (one cheap netlink request; deleting the interface now
        would cost ~20 ms per client). If the kernel will not remove it, the
        old interface goes at once."""
        ip, c.ip = c.ip, None
        if not ip or self.tap:
            return
        if not tun.remove_peer_address(self.ipr, c.iface.index, self.cfg.local_ip, ip):
            tun.delete_link(self.ipr, c.iface.index)

    def _drop_released(self) -> None:
        """Deletes the released interfaces in one request, then closes them
        and gives their addresses back. Closing the last descriptor of a TUN
        device deletes it too, but one by one: the kernel waits for the
        network stack each time (~20 ms, 20 s for a thousand clients)."""
        if not self._released:
            return
        gone, self._released = self._released, []
        tun.delete_group(self.ipr, self._group_released)
        for c in gone:
            c.iface.close()
            self._give_back(c.ip)

    def on_event(self, ev: _engine.Event) -> bool:
        match ev:
            case _engine.HandshakeRequest():
                self.on_request(ev)
            case _engine.HandshakeRejected():
                more = f" ({ev.suppressed} more not shown)" if ev.suppressed else ""
                log.warning(
                    "refused a handshake from %s: %s%s", _fmt_addr(ev.peer), ev.reason, more
                )
            case _engine.SessionConfirmed():
                try:
                    self._confirm(ev.session_id)
                except Exception:
                    log.exception("could not set up a confirmed client; closing its session")
                    self.endpoint.close(ev.session_id)
            case _engine.SessionClosed():
                u = self.unconfirmed.pop(ev.session_id, None)
                if u:
                    # Its answer was lost and the client tried again, or it
                    # went away, or the message 1 was a replay.
                    log.info(
                        "a session answered for %s from %s was never confirmed; forgotten",
                        u.client_id or "(no id)",
                        u.remote,
                    )
                    self._give_back(u.ip)
                c = self.clients.get(ev.session_id)
                if c:
                    self._release(c, ev.reason)
            case _engine.PeerMoved():
                c = self.clients.get(ev.session_id)
                if c:
                    c.remote = _fmt_addr(ev.peer)
                    log.info("client %s moved to %s", c.client_id or "(no id)", c.remote)
            case _engine.PathMtuProblem():
                c = self.clients.get(ev.session_id)
                log.warning(
                    "the path to client %s drops datagrams of %d bytes (%d get through): set "
                    "--udp-mtu %d or lower on both sides",
                    (c.client_id or c.remote) if c else f"{ev.session_id:#x}",
                    ev.configured,
                    ev.works,
                    ev.works,
                )
        return True

    def snapshot(self) -> dict:
        """What `kcpvpn status` shows: each client with its session's counters."""
        stats = self.endpoint.stats().to_dict()
        by_id = {s["session_id"]: s for s in stats["sessions"]}
        drops = tun.queue_drops(self.ipr)
        clients = []
        for c in self.clients.values():
            clients.append(
                {
                    "client_id": c.client_id,
                    "interface": c.iface.name,
                    "ip": c.ip,
                    "ip_mode": c.ip_mode,
                    "remote": c.remote,
                    "since": c.since,
                    "tun_offload": c.iface.offload,
                    "tun_queue_drops": drops.get(c.iface.index),
                    **by_id.get(c.session_id, {}),
                }
            )
        return {
            "mode": "server",
            "pid": os.getpid(),
            "started": self.started,
            "listen": self.listen,
            "vni_mode": self.cfg.vni_mode,
            "tun_offload": self.cfg.tun_offload and not self.tap,
            "clients": clients,
            "unconfirmed": len(self.unconfirmed),
            "endpoint": stats["endpoint"],
        }

    def run(self) -> int:
        stopper = Stopper()
        status = open_status("server", self.cfg, self.snapshot)
        try:
            event_loop(
                self.endpoint,
                stopper,
                self.on_event,
                tick=self._drop_released,
                status=status,
                reload=self.reload,
            )
        finally:
            stopper.close()
            if status:
                status.close()
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.endpoint.stop()
        # Every interface of ours in one request (they are all in our group),
        # before the per-client bookkeeping finds each one gone already.
        tun.delete_group(self.ipr, self._group)
        for c in list(self.clients.values()):
            self._release(c, "server shutting down")
        self._drop_released()
        self.ipr.close()
        if self.sock is not None:
            self.sock.close()
        if self.hooks:
            self.hooks.stop(grace=5)


def run(cfg: ServerConfig, reload: Callable[[], ServerConfig] | None = None) -> int:
    return Server(cfg, reload).run()
