"""What the server and the client share: the UDP socket, the data path's
settings handed to the native engine, and a loop that waits for engine
events and signals without ever touching a packet."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
from collections.abc import Callable
from typing import Any

from . import _engine

log = logging.getLogger("kcpvpn")

# SO_RCVBUFFORCE / SO_SNDBUFFORCE let root exceed net.core.{r,w}mem_max.
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


def engine_params(cfg) -> _engine.SessionParams:
    """The engine's settings from the flags (the engine checks them again:
    it owns every bound)."""
    t = cfg.transport
    udp_mtu = t.udp_mtu
    if t.tcp:
        # The same IP packet size as UDP mode: a TCP header (20 bytes, no
        # options on data segments) is 12 bytes larger than a UDP one, and
        # each segment frames its datagram with a 2-byte length.
        udp_mtu = max(_engine.UDP_MTU_RANGE[0], udp_mtu - _engine.TCP_EXTRA_OVER_UDP)
    return _engine.SessionParams(
        mss_clamp=cfg.mss_clamp,
        kcp_mode=t.kcp_mode,
        sndwnd=t.sndwnd,
        rcvwnd=t.rcvwnd,
        datashard=t.datashard,
        parityshard=t.parityshard,
        rapid_fec=t.rapid_fec,
        congestion=t.congestion,
        unordered=t.unordered,
        flow_queueing=t.flow_queueing,
        crypt=t.crypt,
        keepalive=t.keepalive,
        rekey_interval=t.rekey_interval,
        udp_mtu=udp_mtu,
        smuxbuf=t.smuxbuf,
        sockbuf=t.sockbuf,
        acknodelay=t.acknodelay,
        nodelay=t.nodelay,
        interval=t.interval,
        resend=t.resend,
        nc=t.nc,
    )


def open_socket(host: str, port: int, *, bind: bool, sockbuf: int, dscp: int) -> socket.socket:
    """A UDP socket: bound to host:port for the server; for the client, an
    ephemeral socket of the server address's family."""
    addr: tuple[Any, ...] | None
    if bind:
        if host in ("", "0.0.0.0", "::"):
            family, addr = socket.AF_INET6, ("::", port)
            any_v4 = host != "::"
        else:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            family, addr, any_v4 = info[0], info[4], False
    else:
        family, addr, any_v4 = socket.AF_INET6 if ":" in host else socket.AF_INET, None, False
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # "" / 0.0.0.0 listen on both families; "::" means IPv6 only.
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if any_v4 or host == "" else 1)
        for force, plain in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
        ):
            try:
                s.setsockopt(socket.SOL_SOCKET, force, sockbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, plain, sockbuf)
        if dscp:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
            else:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
        if bind:
            assert addr is not None
            try:
                s.bind(addr)
            except OSError as e:
                h = str(addr[0])
                where = f"[{h}]:{port}" if ":" in h else f"{h}:{port}"
                raise OSError(
                    f"cannot listen on {where}: {e.strerror} (another program has the port? "
                    "choose another --port)"
                ) from None
    except OSError:
        s.close()
        raise
    return s


class Stopper:
    """SIGINT/SIGTERM set a flag and wake the wait loop through a pipe;
    SIGHUP asks for a reload (`take_reload`) and stops nothing."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._reload = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self.signal = signum
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def take_reload(self) -> bool:
        """True once after each SIGHUP."""
        r, self._reload = self._reload, False
        return r

    @property
    def stopped(self) -> bool:
        return self.signal is not None

    def fileno(self) -> int:
        return self._r

    def wait(self, fds: list[int], timeout: float) -> list[int]:
        """Waits for any of `fds` (or a signal) up to `timeout` seconds.
        poll(), not select(): descriptors may be numbered past 1023."""
        p = select.poll()
        for fd in (self._r, *fds):
            p.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ in p.poll(max(0.0, timeout) * 1000)]
        except InterruptedError:
            return []
        if self._r in ready:
            try:
                os.read(self._r, 64)
            except OSError:
                pass
        return [fd for fd in ready if fd != self._r]

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        os.close(self._r)
        os.close(self._w)


def open_status(mode: str, cfg, snapshot: Callable[[], dict]):
    """The status socket (None when --status-socket none). A socket that can't
    be created costs the user `kcpvpn status`, not the tunnel: log and go on."""
    from .observe import metrics
    from .status import StatusServer, default_path

    metrics.attach(snapshot)  # --metrics serves the same document
    path = cfg.status_socket or default_path(mode, cfg)
    if path.lower() == "none":
        return None
    try:
        return StatusServer(path, snapshot)
    except OSError as e:
        log.warning("no status socket (%s): `kcpvpn status` won't work for this daemon", e)
        return None


def stretch(secret: str, network: str = _engine.DEFAULT_NETWORK) -> _engine.Psk:
    """The secret stretched once with Argon2id, salted with the network name
    (costly on purpose: a weak password costs an offline guesser as much per
    guess, and each network needs a dictionary of its own)."""
    return _engine.Psk(secret.encode(), network)


def event_loop(
    endpoint: _engine.Endpoint,
    stopper: Stopper,
    on_event: Callable[[_engine.Event], bool],
    tick: Callable[[], None] | None = None,
    status: Any = None,
    reload: Callable[[], None] | None = None,
) -> None:
    """Runs until a signal stops it or `on_event` returns False; answers
    status requests on `status` (a status.StatusServer) and reloads on
    SIGHUP meanwhile."""
    efd = endpoint.event_fd()
    fds = [efd] if status is None else [efd, status.fileno()]
    while not stopper.stopped:
        ready = stopper.wait(fds, 1.0)
        if stopper.take_reload() and reload is not None:
            reload()
        if status is not None and status.fileno() in ready:
            status.handle()
        for ev in endpoint.events():
            try:
                go_on = on_event(ev)
            except Exception:
                # A bug about one event (one peer) must not end the daemon.
                log.exception("handling %r failed; going on", ev)
                continue
            if not go_on:
                return
        if tick:
            tick()
        if not endpoint.is_running():
            log.error("the data path stopped unexpectedly")
            return
