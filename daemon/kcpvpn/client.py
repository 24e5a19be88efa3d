"""`kcpvpn client`: connects to the server, sets up the interface it is given
and supervises the native data path. The engine runs the handshake (its
attempts and retries); this side decides what to do when a connection ends
or fails: with --auto-reconnect, start over, forever, in the same process."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import socket
import time

from . import _engine, errors, tun
from .config import ClientConfig
from .keys import decode_key, read_private_key
from .supervisor import (
    Stopper,
    engine_params,
    event_loop,
    open_socket,
    open_status,
    stretch,
)

log = logging.getLogger("kcpvpn.client")

HANDSHAKE_ATTEMPTS = 10  # without --auto-reconnect, give up after this many
# Backoff between connection attempts that failed with an answer (refused,
# another secret): doubles from the first to the cap, with jitter so that
# clients of one server restarted together spread out.
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 30.0
# How long a failed name lookup waits before the next (with jitter).
RESOLVE_RETRY = 2.0


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)


def _same_tunnel(a: _engine.TunnelConfig, b: _engine.TunnelConfig) -> bool:
    """Whether the interface set up for `a` serves `b` as it is."""
    keys = ("tap", "mtu", "server_ip", "client_ip", "prefixlen")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _identity_args(cfg: ClientConfig) -> dict[str, bytes]:
    """Identity mode's keyword arguments of Endpoint.client / client_tcp."""
    if not cfg.identity:
        return {}
    try:
        return {
            "private_key": read_private_key(cfg.transport.private_key_file or ""),
            "server_public_key": decode_key(cfg.server_public_key or "", "--server-public-key"),
        }
    except ValueError as e:
        raise errors.StartupError(str(e)) from None


class Client:
    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        t = cfg.transport
        if cfg.bridge:
            try:
                tun.require_bridge(cfg.bridge)
            except tun.InterfaceError as e:
                raise errors.StartupError(f"--bridge: {e}") from None
        self.psk = stretch(t.secret, t.network)
        self.keys = _identity_args(cfg)
        self.params = engine_params(cfg)
        self.server: tuple[str, int] | None = None
        self.sock: socket.socket | None = None
        # Fake TCP: the server the endpoint is for.
        self._tcp_server: tuple[str, int] | None = None
        self.ep: _engine.Endpoint | None = None
        self.iface: tun.Interface | None = None
        self.ip: str | None = None
        self.conf: _engine.TunnelConfig | None = None
        self.session_id: int | None = None
        self.up = False
        self.status = None
        self.started = time.time()
        self.connected_since: float | None = None
        self.stopper = Stopper()
        self.code = 0
        # The last problem logged, so a long outage logs one line, not one per try.
        self._last_problem: str | None = None
        self._backoff = BACKOFF_FIRST
        self._retry_at: float | None = None
        self.hooks = None
        if cfg.on_connected_hook or cfg.on_disconnected_hook:
            from .hooks import ClientHooks

            self.hooks = ClientHooks(cfg.on_connected_hook, cfg.on_disconnected_hook)

    # -- the server's address and the endpoint ------------------------------

    def _resolve(self) -> tuple[str, int]:
        t = self.cfg.transport
        try:
            info = socket.getaddrinfo(t.ip, t.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise errors.StartupError(
                f"cannot resolve server address {t.ip!r}: {e.strerror}"
            ) from None
        host, port = info[0][4][:2]
        return (str(host), int(port))

    def _endpoint(self, server: tuple[str, int]) -> _engine.Endpoint:
        """The endpoint, (re)made when the server's address family changes
        (fake TCP: when the server's address changes)."""
        t = self.cfg.transport
        if t.tcp:
            if self.ep is not None and self._tcp_server == server:
                return self.ep
            self._close_endpoint()
            self.ep = _engine.Endpoint.client_tcp(
                server, self.psk, self.params, dscp=t.dscp, sockbuf=t.sockbuf, **self.keys
            )
            self._tcp_server = server
            return self.ep
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        if self.ep is not None and self.sock is not None and self.sock.family == family:
            return self.ep
        self._close_endpoint()
        self.sock = open_socket(server[0], t.port, bind=False, sockbuf=t.sockbuf, dscp=t.dscp)
        self.ep = _engine.Endpoint.client(
            os.dup(self.sock.fileno()), self.psk, self.params, **self.keys
        )
        return self.ep

    def _close_endpoint(self) -> None:
        if self.ep is not None:
            self.ep.stop()
            self.ep = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._tcp_server = None

    def _problem(self, message: str, level: int = logging.WARNING) -> None:
        """Logs a problem once until another one (or success) comes."""
        if message != self._last_problem:
            log.log(level, "%s", message)
            self._last_problem = message

    def connect(self) -> bool:
        """Starts connecting (resolving the name again each time, as it may
        have moved). False if it could not start; with --auto-reconnect a
        retry is then scheduled."""
        cfg = self.cfg
        try:
            self.server = self._resolve()
            ep = self._endpoint(self.server)
        except (errors.StartupError, OSError) as e:
            if not cfg.auto_reconnect:
                raise
            self._problem(f"{e}; retrying until it works")
            self._retry_at = time.monotonic() + _jitter(RESOLVE_RETRY)
            return False
        ep.connect(
            self.server,
            mtu=cfg.vni_mtu,
            client_id=cfg.client_id or "",
            ip_mode=cfg.ip_mode,
            ip=cfg.local_ip if cfg.ip_mode == _engine.IP_MODES["client"] else None,
            max_attempts=None if cfg.auto_reconnect else HANDSHAKE_ATTEMPTS,
        )
        self._retry_at = None
        return True

    # -- the interface --------------------------------------------------------

    def _setup_interface(self, conf: _engine.TunnelConfig) -> tuple[tun.Interface, str | None]:
        cfg = self.cfg
        tap = conf.tap
        mtu = conf.mtu
        if self.iface is None or self.iface.fd < 0:
            self.iface = tun.open_tun(
                cfg.vni_name, tap=tap, persistent=cfg.persistent_vni, offload=cfg.tun_offload
            )
        name = self.iface.name
        ip = conf.client_ip
        if cfg.bridge and not tap:
            log.warning(
                "--bridge %s has no effect: the server runs TUN mode (only a TAP joins a bridge)",
                cfg.bridge,
            )
        if tap and cfg.bridge:
            # A bridge port carries no address of its own (the bridge may).
            tun.configure(name, mtu=mtu, bridge=cfg.bridge, flush=True)
            ip = None
        elif cfg.no_ip_configuration:
            tun.configure(name, mtu=mtu)
        elif ip:
            if tap:
                plen = conf.prefixlen
                if plen is None:
                    plen = ipaddress.ip_address(ip).max_prefixlen
                tun.configure(name, mtu=mtu, local=ip, prefixlen=plen, flush=True)
            else:
                tun.configure(name, mtu=mtu, local=ip, peer=conf.server_ip, flush=True)
        else:
            tun.configure(name, mtu=mtu)
        return self.iface, ip

    def _drop_interface(self) -> None:
        if self.iface is not None:
            self.iface.close()
            self.iface = None

    # -- events ---------------------------------------------------------------

    def on_event(self, ev: _engine.Event) -> bool:
        cfg = self.cfg
        match ev:
            case _engine.Connected():
                return self._on_connected(ev)
            case _engine.SessionUp() if self.up:
                # A new session took over from one the server had lost (it
                # restarted): the interface stayed as it was.
                self.connected_since = time.time()
                log.info("the server had lost our session (restarted?); continuing in a new one")
            case _engine.SessionUp():
                self.up = True
                self.connected_since = time.time()
                self._last_problem = None
                self._backoff = BACKOFF_FIRST
                conf = self.conf
                assert conf is not None and self.iface is not None and self.server is not None
                log.info(
                    "connected to %s:%s: interface %s (%s), address %s, peer %s, MTU %d",
                    self.server[0],
                    self.server[1],
                    self.iface.name,
                    "tap" if conf.tap else "tun",
                    self.ip or "none",
                    conf.server_ip or "none",
                    conf.mtu,
                )
                self._hook("connected")
            case _engine.ConnectFailed():
                reason = ev.reason
                if cfg.identity and ev.kind == "no-answer":
                    reason += (
                        " (identity mode: a server that cannot read our handshake because "
                        "--server-public-key is not its key may also stay silent)"
                    )
                if not cfg.auto_reconnect or ev.kind == "invalid":
                    log.error("%s", reason)
                    self.code = 1
                    return False
                self._problem(f"{reason}; trying again")
                # An answer that says no is worth a longer pause than silence
                # (which the engine already retries every second).
                self._retry_at = time.monotonic() + _jitter(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_CAP)
            case _engine.SessionClosed():
                if ev.session_id != self.session_id:
                    return True
                return self._on_closed(ev)
            case _engine.PeerMoved():
                log.info("the server now answers from %s:%s", *ev.peer)
            case _engine.PathMtuProblem():
                log.warning(
                    "the path to the server drops datagrams of %d bytes (%d get through): set "
                    "--udp-mtu %d or lower on both sides",
                    ev.configured,
                    ev.works,
                    ev.works,
                )
        return True

    def _on_connected(self, ev: _engine.Connected) -> bool:
        old, self.conf = self.conf, ev.config
        self.session_id = ev.session_id
        if self.up and self.iface is not None and old is not None and _same_tunnel(old, ev.config):
            # A renewal on the same terms: keep the interface (and whatever
            # hooks added to it) as it is.
            assert self.ep is not None
            try:
                self.ep.attach(ev.session_id, os.dup(self.iface.fd))
            except errors.EngineError as e:
                log.error("cannot start the session: %s", e)
            return True
        if self.up:
            # Renewed with other terms (another address): set up again.
            self._hook("disconnected")
            self.up = False
        try:
            iface, self.ip = self._setup_interface(ev.config)
        except (tun.InterfaceError, OSError) as e:
            log.error("cannot set up the interface: %s", e)
            if self.ep is not None:
                self.ep.close(ev.session_id)
            self.code = 1
            return bool(self.cfg.auto_reconnect)
        assert self.ep is not None
        try:
            self.ep.attach(ev.session_id, os.dup(iface.fd))
        except errors.EngineError as e:
            log.error("cannot start the session: %s", e)
        return True

    def _on_closed(self, ev: _engine.SessionClosed) -> bool:
        cfg = self.cfg
        was_up = self.up
        self.up = False
        self.session_id = None
        self.connected_since = None
        if was_up:
            self._hook("disconnected")
        log.warning("session ended: %s", ev.reason)
        gone = ev.kind == "interface-gone"
        if gone or not cfg.persistent_vni:
            self._drop_interface()
        # A --persistent-vni interface deleted underneath is made again.
        if not cfg.auto_reconnect and not (gone and cfg.persistent_vni):
            self.code = 1
            return False
        log.info("reconnecting")
        self.connect()
        return True

    def tick(self) -> None:
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            self.connect()

    def _hook(self, event: str) -> None:
        if self.hooks and self.iface is not None and self.server is not None:
            cfg = self.cfg
            self.hooks.run(
                event,
                client_id=cfg.client_id or "",
                interface=self.iface.name,
                client_ip=self.ip,
                ip_mode=cfg.ip_mode,
                remote_addr=self.server,
            )

    def snapshot(self) -> dict:
        ep = self.ep
        stats = ep.stats().to_dict() if ep is not None else {"sessions": [], "endpoint": {}}
        server = self.server or (self.cfg.transport.ip, self.cfg.transport.port)
        iface = self.iface if self.iface and self.iface.fd >= 0 else None
        drops = None
        if iface is not None:
            with tun.IPRoute() as ipr:
                drops = tun.queue_drops(ipr).get(iface.index)
        return {
            "mode": "client",
            "pid": os.getpid(),
            "started": self.started,
            "server": f"{server[0]}:{server[1]}",
            "client_id": self.cfg.client_id,
            "state": "connected" if self.up else "connecting",
            "interface": self.iface.name if self.iface else None,
            # TSO reads and merged writes (IFF_VNET_HDR), or the plain path.
            "tun_offload": iface.offload if iface else None,
            # Packets the interface's queue dropped before the engine read them.
            "tun_queue_drops": drops,
            "ip": self.ip,
            "since": self.connected_since,
            "sessions": stats["sessions"],
            "endpoint": stats["endpoint"],
        }

    def run(self) -> int:
        self.status = open_status("client", self.cfg, self.snapshot)
        try:
            self.connect()
            while not self.stopper.stopped:
                if self.ep is None:
                    # Nothing to wait on but the retry (no endpoint yet).
                    self.stopper.wait([], 0.2)
                    self.tick()
                    continue
                event_loop(self.ep, self.stopper, self.on_event, tick=self.tick, status=self.status)
                if self.code or not self.cfg.auto_reconnect:
                    break
                if self.ep is not None and not self.ep.is_running():
                    # The data path died: start it over.
                    self._close_endpoint()
                    self.connect()
        finally:
            if self.up:
                self._hook("disconnected")
            self._close_endpoint()
            self._drop_interface()
            self.stopper.close()
            if self.status:
                self.status.close()
            if self.hooks:
                self.hooks.stop(grace=5)
        return self.code


def run(cfg: ClientConfig) -> int:
    return Client(cfg).run()
