"""What the server and the client share: the UDP socket, the data-path
parameters handed to the native engine, and a loop that waits for engine
events and signals without ever touching a packet."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
from collections.abc import Callable

from . import _engine

log = logging.getLogger("kcpvpn")

# SO_RCVBUFFORCE / SO_SNDBUFFORCE let root exceed net.core.{r,w}mem_max.
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


def session_params(
    t,
    peer_fec: tuple[int, int] | None,
    max_packet: int,
    *,
    mtu: int,
    tap: bool,
    mss_clamp: bool = True,
) -> dict:
    """The native session's parameters from the transport flags."""
    nodelay, interval, resend, nc = t.kcp_profile
    keepalive_ms = max(1, int(t.keepalive)) * 1000
    return {
        "nodelay": bool(nodelay),
        "interval": interval,
        "resend": resend,
        "nc": bool(nc),
        "bbr": t.congestion == "bbr",
        "unordered": bool(t.unordered),
        "sndwnd": t.sndwnd,
        "rcvwnd": t.rcvwnd,
        "ack_nodelay": bool(t.acknodelay),
        "fec_send": t.fec,
        "fec_recv": peer_fec,
        "rapid_fec": bool(t.rapid_fec),
        "cipher": t.crypt,
        "keepalive_ms": keepalive_ms,
        # A peer silent for three keepalive periods is gone.
        "idle_timeout_ms": 3 * keepalive_ms + 1000,
        "udp_mtu": t.udp_mtu,
        "send_buffer": t.smuxbuf,
        "max_packet": max_packet,
        # TCP SYNs crossing the tunnel get an MSS that fits its MTU.
        "mss_clamp_mtu": mtu if mss_clamp else None,
        "ethernet": tap,
    }


def open_socket(host: str, port: int, *, bind: bool, sockbuf: int, dscp: int) -> socket.socket:
    """A UDP socket: bound to host:port for the server; for the client, an
    ephemeral socket of the server address's family."""
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
            try:
                s.bind(addr)
            except OSError as e:
                where = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
                raise OSError(
                    f"cannot listen on {where}: {e.strerror} (another program has the port? "
                    "choose another --port)"
                ) from None
    except OSError:
        s.close()
        raise
    return s


class Stopper:
    """SIGINT/SIGTERM set a flag and wake the wait loop through a pipe."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.signal = signum
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    @property
    def stopped(self) -> bool:
        return self.signal is not None

    def fileno(self) -> int:
        return self._r

    def wait(self, fds: list[int], timeout: float) -> list[int]:
        """Waits for any of `fds` (or a signal) up to `timeout` seconds."""
        try:
            ready, _, _ = select.select([self._r, *fds], [], [], timeout)
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


def stretch(secret: str) -> _engine.Psk:
    """The secret stretched once with Argon2id (costly on purpose: a weak
    password costs an offline guesser as much per guess)."""
    return _engine.Psk(secret.encode())


def event_loop(
    endpoint,
    stopper: Stopper,
    on_event: Callable[[dict], bool],
    tick: Callable[[], None] | None = None,
    status=None,
) -> None:
    """Runs until a signal or until `on_event` returns False; answers status
    requests on `status` (a status.StatusServer) meanwhile."""
    efd = endpoint.event_fd()
    fds = [efd] if status is None else [efd, status.fileno()]
    while not stopper.stopped:
        ready = stopper.wait(fds, 1.0)
        if status is not None and status.fileno() in ready:
            status.handle()
        for ev in endpoint.events():
            if not on_event(ev):
                return
        if tick:
            tick()
        if not endpoint.is_running():
            log.error("the data path stopped unexpectedly")
            return
