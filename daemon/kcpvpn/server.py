"""`kcpvpn server`: answers handshakes, gives each client an address and its
own interface, and supervises the native data path."""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from . import _engine, tun
from .config import client_id_problem
from .supervisor import (
    Stopper,
    event_loop,
    open_socket,
    open_status,
    session_params,
    stretch,
)

log = logging.getLogger("kcpvpn.server")

IP_MODE_SERVER = 0
IP_MODE_CLIENT = 1
IP_MODE_NONE = 2


@dataclass
class Client:
    session_id: int
    client_id: str
    iface: tun.Interface
    ip: str | None
    ip_mode: int
    remote: str
    since: float = field(default_factory=time.time)


def _fmt_addr(addr) -> str:
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self, cfg) -> None:
        from .hooks import HookRunner
        from .ippool import IpPool

        self.cfg = cfg
        t = cfg.transport
        self.tap = cfg.vni_mode == "tap"
        if cfg.bridge:
            try:
                tun.require_bridge(cfg.bridge)
            except tun.InterfaceError as e:
                raise SystemExit(f"kcpvpn server: --bridge: {e}") from None
        self.pool = IpPool(
            cfg.assignable_ips,
            exclude=[cfg.local_ip] if cfg.local_ip else [],
            tun_mode=not self.tap,
        )
        self.hooks = HookRunner(cfg.hook_dir) if cfg.hook_dir else None
        self.clients: dict[int, Client] = {}
        self.psk = stretch(t.secret)
        self.sock = open_socket(t.ip, t.port, bind=True, sockbuf=t.sockbuf, dscp=t.dscp)
        self.endpoint = _engine.Endpoint.server(
            os.dup(self.sock.fileno()), self.psk, max_datagram=t.udp_mtu
        )
        host, port = self.sock.getsockname()[:2]
        self.listen = _fmt_addr((host, port))
        self.started = time.time()
        log.info("listening on %s (%s mode)", self.listen, cfg.vni_mode)

    # -- handshake policy -------------------------------------------------
    def _refuse(self, pending_id: int, reason: str) -> None:
        log.warning("refused a client: %s", reason)
        self.endpoint.refuse(pending_id, reason)

    def on_request(self, ev: dict) -> None:
        cfg, t = self.cfg, self.cfg.transport
        req = ev["request"]
        pid = ev["pending_id"]
        cid = req["client_id"]
        remote = _fmt_addr(ev["from"])
        # The handshake decoder already refuses such ids; checked again here
        # because the id becomes part of a hook's path.
        why = client_id_problem(cid)
        if why:
            return self._refuse(pid, why)
        if req["cipher"] != t.crypt:
            return self._refuse(
                pid,
                f"cipher mismatch: the server uses --crypt {t.crypt}, the client "
                f"{req['cipher']}; use the same --crypt on both sides",
            )
        # A new handshake replaces the old session of the same client: the same
        # non-empty id, or the same address and port (one socket has one
        # session; on a lossy path a lost answer makes the client try again).
        for old in [
            c for c in self.clients.values() if (cid and c.client_id == cid) or c.remote == remote
        ]:
            log.info(
                "client %s handshook again from %s; dropping its old session",
                cid or "(no id)",
                remote,
            )
            self.endpoint.close(old.session_id)
            self._release(old, "replaced by a new connection")
        mode = req["ip_mode"]
        ip: str | None = None
        if mode == IP_MODE_SERVER:
            try:
                ip = self.pool.allocate()
            except Exception as e:  # PoolExhausted or no pool
                return self._refuse(pid, str(e))
        elif mode == IP_MODE_CLIENT:
            ip = req["ip"]
            reason = self.pool.reserve(ip)
            if reason:
                return self._refuse(pid, reason)
        mtu = min(int(req["mtu"]), cfg.vni_mtu)
        taken = {c.iface.name for c in self.clients.values()}
        try:
            name = tun.free_name(cfg.vni_name_prefix, taken)
            iface = tun.open_tun(name, tap=self.tap)
            try:
                if self.tap:
                    tun.configure(name, mtu=mtu, bridge=cfg.bridge)
                else:
                    tun.configure(name, mtu=mtu, local=cfg.local_ip, peer=ip)
            except Exception:
                iface.close()
                raise
        except Exception as e:
            if ip:
                self.pool.release(ip)
            log.error("cannot set up an interface for client %r: %s", cid, e)
            return self._refuse(pid, "the server could not create an interface for this client")
        session_id = self._new_session_id()
        full_frame = cfg.full_frame_mtu or (mtu + 22)
        server_cfg = {
            "tap": self.tap,
            "mtu": mtu,
            "full_frame_mtu": full_frame,
            "server_ip": cfg.local_ip,
            "client_ip": ip,
            "prefixlen": cfg.prefixlen,
            "fec": t.fec,
        }
        params = session_params(
            t,
            peer_fec=req.get("fec"),
            max_packet=full_frame,
            mtu=mtu,
            tap=self.tap,
            mss_clamp=cfg.mss_clamp,
        )
        self.endpoint.accept(pid, session_id, server_cfg, os.dup(iface.fd), params)
        c = Client(session_id, cid, iface, ip, mode, remote)
        self.clients[session_id] = c
        log.info(
            "client %s connected from %s: interface %s, address %s",
            cid or "(no id)",
            remote,
            iface.name,
            ip or "none",
        )
        self._hook("connected", c)

    def _new_session_id(self) -> int:
        while True:
            sid = secrets.randbits(32)
            if sid and sid not in self.clients:
                return sid

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
        self.clients.pop(c.session_id, None)
        c.iface.close()
        if c.ip:
            self.pool.release(c.ip)
        log.info(
            "client %s disconnected (%s); released %s%s",
            c.client_id or "(no id)",
            why,
            c.iface.name,
            f" and {c.ip}" if c.ip else "",
        )
        self._hook("disconnected", c)

    def on_event(self, ev: dict) -> bool:
        kind = ev["event"]
        if kind == "handshake":
            self.on_request(ev)
        elif kind == "closed":
            c = self.clients.get(ev["session_id"])
            if c:
                self._release(c, ev["reason"])
        elif kind == "moved":
            c = self.clients.get(ev["session_id"])
            if c:
                c.remote = _fmt_addr(ev["to"])
                log.info("client %s moved to %s", c.client_id or "(no id)", c.remote)
        elif kind == "error":
            log.error("%s", ev["message"])
        return True

    def snapshot(self) -> dict:
        """What `kcpvpn status` shows: each client with its session's counters."""
        stats = self.endpoint.stats()
        by_id = {s["session_id"]: s for s in stats["sessions"]}
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
                    **by_id.get(c.session_id, {}),
                }
            )
        return {
            "mode": "server",
            "pid": os.getpid(),
            "started": self.started,
            "listen": self.listen,
            "vni_mode": self.cfg.vni_mode,
            "clients": clients,
            "endpoint": stats["endpoint"],
        }

    def run(self) -> int:
        stopper = Stopper()
        status = open_status("server", self.cfg, self.snapshot)
        try:
            event_loop(self.endpoint, stopper, self.on_event, status=status)
        finally:
            stopper.close()
            if status:
                status.close()
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.endpoint.stop()
        for c in list(self.clients.values()):
            self._release(c, "server shutting down")
        self.sock.close()
        if self.hooks:
            self.hooks.stop(grace=5)


def run(cfg) -> int:
    return Server(cfg).run()
