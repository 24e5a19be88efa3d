"""Live status: the daemon answers each connection on a unix socket with one
JSON document (its sessions and counters), then closes it. `kcpvpn status`,
the lab's demo and monitoring read it; nothing is pushed, so an idle daemon
costs nothing."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("kcpvpn.status")

RUN_DIR = Path("/run/kcpvpn")


def default_path(mode: str, cfg) -> str:
    if mode == "server":
        return str(RUN_DIR / f"server-{cfg.transport.port}.sock")
    return str(RUN_DIR / f"client-{cfg.vni_name}.sock")


class StatusServer:
    """Serves `snapshot()` as JSON to whoever connects (root-only socket)."""

    def __init__(self, path: str, snapshot: Callable[[], dict]) -> None:
        self.path = path
        self.snapshot = snapshot
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if p.exists() or p.is_symlink():
            if not stat.S_ISSOCK(p.lstat().st_mode):
                raise OSError(f"{path} exists and is not a socket; choose another --status-socket")
            if _alive(path):
                raise OSError(
                    f"another kcpvpn daemon answers on {path}; stop it or pass --status-socket"
                )
            p.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        old = os.umask(0o077)  # the figures name peers and addresses: owner only
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(8)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self) -> None:
        """Answers every connection waiting (called when the socket is readable)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                conn.settimeout(1.0)
                conn.sendall(json.dumps(self.snapshot()).encode() + b"\n")
            except OSError as e:
                log.debug("status reader went away: %s", e)
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def read(path: str, timeout: float = 3.0) -> dict:
    """One status document from the daemon at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    finally:
        s.close()
    return json.loads(b"".join(chunks))


def read_problem(path: str, e: Exception) -> str:
    """What a failed `read(path)` means for the person who asked."""
    if isinstance(e, ConnectionRefusedError):
        return (
            "nothing answers on this socket: the daemon that created it is gone "
            f"(crashed or killed); remove the stale socket (rm {path}) or start the daemon again"
        )
    if isinstance(e, FileNotFoundError):
        return "no such socket: is the daemon running, and with this --status-socket?"
    if isinstance(e, PermissionError):
        return "permission denied: the status socket is readable by its daemon's user and root only"
    if isinstance(e, TimeoutError):
        return "the daemon did not answer within 3 s (hung or overloaded?)"
    if isinstance(e, ValueError):
        return f"the answer is not a status document ({e}): is this a kcpvpn status socket?"
    return str(e)


def find_sockets() -> list[str]:
    if not RUN_DIR.is_dir():
        return []
    return sorted(str(p) for p in RUN_DIR.glob("*.sock"))


def uptime(started: float) -> str:
    s = int(time.time() - started)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"
