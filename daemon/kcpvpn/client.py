"""`kcpvpn client`: handshakes with the server, sets up its interface and
supervises the native data path; with --auto-reconnect it starts over after
the session ends, in the same process."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import time

from . import _engine, tun
from .supervisor import (
    Stopper,
    event_loop,
    open_socket,
    open_status,
    session_params,
    stretch,
)

log = logging.getLogger("kcpvpn.client")

HANDSHAKE_TIMEOUT = 1.0  # seconds to wait for an answer before resending
HANDSHAKE_ATTEMPTS = 10  # without --auto-reconnect, give up after this many


class Refused(Exception):
    """The server answered and said no; the message is its reason."""


class NoAnswer(Exception):
    pass


class Client:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        t = cfg.transport
        if cfg.bridge:
            try:
                tun.require_bridge(cfg.bridge)
            except tun.InterfaceError as e:
                raise SystemExit(f"kcpvpn client: --bridge: {e}") from None
        self.psk = stretch(t.secret)
        self.server = self._resolve(t.ip, t.port)
        self.iface: tun.Interface | None = None
        self.ep = None
        self.ip: str | None = None
        self.status = None
        self.started = time.time()
        self.connected_since: float | None = None
        self.stopper = Stopper()
        self.hooks = None
        if cfg.on_connected_hook or cfg.on_disconnected_hook:
            from .hooks import ClientHooks

            self.hooks = ClientHooks(cfg.on_connected_hook, cfg.on_disconnected_hook)

    @staticmethod
    def _resolve(host: str, port: int) -> tuple:
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise SystemExit(f"kcpvpn: cannot resolve server address {host!r}: {e.strerror}") from e
        return info[0][4]

    def _init_payload(self) -> dict:
        cfg, t = self.cfg, self.cfg.transport
        return {
            "client_id": cfg.client_id or "",
            "mtu": cfg.vni_mtu,
            "ip_mode": cfg.ip_mode,
            "ip": cfg.local_ip if cfg.ip_mode == 1 else None,
            "fec": t.fec,
            "cipher": t.crypt,
        }

    def handshake(self, sock: socket.socket, attempts: int | None):
        """Sends message 1 until an answer arrives; each attempt is a fresh
        initiation (the server refuses a replayed one)."""
        payload = self._init_payload()
        n = 0
        while not self.stopper.stopped and (attempts is None or n < attempts):
            n += 1
            my_id = secrets.randbits(32) or 1
            ini = _engine.Initiator(self.psk, payload, my_id)
            sock.sendto(ini.message(), self.server)
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            while (left := deadline - time.monotonic()) > 0 and not self.stopper.stopped:
                if not self.stopper.wait([sock.fileno()], left):
                    continue
                try:
                    data, addr = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionRefusedError:
                    continue  # ICMP port unreachable: the server isn't up (yet)
                try:
                    out = ini.read_response(data)
                except ValueError as e:
                    # An answer that fails authentication: forged, or the server
                    # has another secret. Keep waiting for a genuine one.
                    log.warning("ignored an answer from %s: %s", addr[0], e)
                    continue
                if out is None:
                    continue  # not an answer to this initiation
                if not out.accepted:
                    raise Refused(f"the server refused the connection: {out.reason}")
                return out, my_id
        if self.stopper.stopped:
            return None, 0
        raise NoAnswer(
            f"no answer from {self.server[0]}:{self.server[1]} after {n} attempts: is the server "
            "running and reachable, and does the path allow UDP?"
        )

    def _setup_interface(self, conf: dict) -> tuple[tun.Interface, str | None]:
        cfg = self.cfg
        tap = conf["tap"]
        mtu = conf["mtu"]
        if self.iface is None or self.iface.fd < 0:
            self.iface = tun.open_tun(cfg.vni_name, tap=tap, persistent=cfg.persistent_vni)
        name = self.iface.name
        ip = conf.get("client_ip")
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
                plen = conf.get("prefixlen")
                if plen is None:
                    plen = ipaddress.ip_address(ip).max_prefixlen
                tun.configure(name, mtu=mtu, local=ip, prefixlen=plen, flush=True)
            else:
                tun.configure(name, mtu=mtu, local=ip, peer=conf.get("server_ip"), flush=True)
        else:
            tun.configure(name, mtu=mtu)
        return self.iface, ip

    def session(self) -> str:
        """One session, from handshake to end. Returns why it ended."""
        cfg, t = self.cfg, self.cfg.transport
        # The resolved address decides the family (--ip may be a host name).
        sock = open_socket(self.server[0], t.port, bind=False, sockbuf=t.sockbuf, dscp=t.dscp)
        try:
            out, my_id = self.handshake(sock, None if cfg.auto_reconnect else HANDSHAKE_ATTEMPTS)
            if out is None:
                return "stopped"
            conf = out.config
            iface, ip = self._setup_interface(conf)
            params = session_params(
                t,
                peer_fec=conf.get("fec"),
                max_packet=conf.get("full_frame_mtu") or conf["mtu"] + 22,
                mtu=conf["mtu"],
                tap=conf["tap"],
                mss_clamp=cfg.mss_clamp,
            )
            ep = _engine.Endpoint.client(os.dup(sock.fileno()), max_datagram=t.udp_mtu)
            try:
                ep.add_session(out, my_id, self.server[:2], os.dup(iface.fd), params)
                reason = "stopped"

                def on_event(ev: dict) -> bool:
                    nonlocal reason
                    if ev["event"] == "up":
                        # The data path has the session: traffic flows from now on.
                        log.info(
                            "connected to %s:%s: interface %s (%s), address %s, peer %s, MTU %d",
                            self.server[0],
                            self.server[1],
                            iface.name,
                            "tap" if conf["tap"] else "tun",
                            ip or "none",
                            conf.get("server_ip") or "none",
                            conf["mtu"],
                        )
                        self._hook("connected", iface.name, ip, conf)
                    if ev["event"] == "closed":
                        reason = ev["reason"]
                        return False
                    if ev["event"] == "error":
                        log.error("%s", ev["message"])
                    return True

                self.ep, self.ip = ep, ip
                self.connected_since = time.time()
                event_loop(ep, self.stopper, on_event, status=self.status)
            finally:
                self.ep = None
                ep.stop()
            self._hook("disconnected", iface.name, ip, conf)
            return reason
        finally:
            sock.close()

    def _hook(self, event: str, name: str, ip: str | None, conf: dict) -> None:
        if self.hooks:
            p = self._init_payload()
            self.hooks.run(
                event,
                client_id=p["client_id"],
                interface=name,
                client_ip=ip,
                ip_mode=p["ip_mode"],
                remote_addr=self.server[:2],
            )

    def _drop_interface(self) -> None:
        if self.iface is not None:
            self.iface.close()
            self.iface = None

    def snapshot(self) -> dict:
        ep = self.ep
        stats = ep.stats() if ep is not None else {"sessions": [], "endpoint": {}}
        return {
            "mode": "client",
            "pid": os.getpid(),
            "started": self.started,
            "server": f"{self.server[0]}:{self.server[1]}",
            "client_id": self.cfg.client_id,
            "state": "connected" if ep is not None else "connecting",
            "interface": self.iface.name if self.iface else None,
            "ip": self.ip,
            "since": self.connected_since,
            "sessions": stats["sessions"],
            "endpoint": stats["endpoint"],
        }

    def run(self) -> int:
        cfg = self.cfg
        self.status = open_status("client", cfg, self.snapshot)
        backoff = 1.0
        code = 0
        try:
            while not self.stopper.stopped:
                started = time.monotonic()
                try:
                    why = self.session()
                except Refused as e:
                    log.error("%s", e)
                    if not cfg.auto_reconnect:
                        code = 1
                        break
                    why = "refused"
                except NoAnswer as e:
                    log.error("%s", e)
                    code = 1
                    break
                if self.stopper.stopped:
                    break
                log.warning("session ended: %s", why)
                if not cfg.persistent_vni:
                    self._drop_interface()
                if not cfg.auto_reconnect:
                    code = 1
                    break
                # Back off after quick failures; start over at once after a long session.
                backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
                log.info("reconnecting in %.0f s", backoff)
                self.stopper.wait([], backoff)
        finally:
            self._drop_interface()
            self.stopper.close()
            if self.status:
                self.status.close()
            if self.hooks:
                self.hooks.stop(grace=5)
        return code


def run(cfg) -> int:
    return Client(cfg).run()
