"""Hooks: user programs run when a client connects or disconnects.

Server (`--hook-dir DIR`): for event E in {connected, disconnected}, run
`DIR/on_<client-id>_E` if the client sent an id and that file is an
executable regular file, else `DIR/on_E` if that is. Client
(`--on-connected-hook`, `--on-disconnected-hook`): the given paths.

Each hook gets the daemon's environment without the secret, plus
KV_CLIENT_ID, KV_VNI_INTERFACE_NAME, KV_CLIENT_IP (0.0.0.0 when none),
KV_CLIENT_IP_MODE (0 server-assigned, 1 client-set, 2 none) and
KV_REMOTE_ADDR (address:port, [v6]:port).

Hooks run without a shell, in their own process group, on a worker thread so
they never stall the caller; a hook still running after the timeout has its
whole process group killed. Hooks of one client (same id, or same interface
when it has no id) run one after the other, so `disconnected` never overtakes
`connected`; hooks of different clients run side by side. Exit status and the
first bytes of output go to the log.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import SECRET_ENV, client_id_problem

log = logging.getLogger("kcpvpn.hooks")

EVENTS = ("connected", "disconnected")
DEFAULT_TIMEOUT = 30.0  # seconds
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a timed-out hook
OUTPUT_LIMIT = 4096  # bytes of a hook's output kept for the log


def format_addr(addr: str | tuple) -> str:
    """('1.2.3.4', 5) -> 1.2.3.4:5, ('::1', 5) -> [::1]:5; strings pass through."""
    if isinstance(addr, str):
        return addr
    host, port = str(addr[0]), int(addr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]  # an IPv4 peer on a dual-stack socket
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HookContext:
    """What a hook is told about the client."""

    client_id: str
    interface: str
    client_ip: str | None
    ip_mode: int
    remote_addr: str | tuple

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.pop(SECRET_ENV, None)  # a hook has no business with the secret
        env.update(
            KV_CLIENT_ID=self.client_id,
            KV_VNI_INTERFACE_NAME=self.interface,
            KV_CLIENT_IP=self.client_ip or "0.0.0.0",
            KV_CLIENT_IP_MODE=str(int(self.ip_mode)),
            KV_REMOTE_ADDR=format_addr(self.remote_addr),
        )
        return env


@dataclass(frozen=True)
class HookResult:
    path: str
    returncode: int | None  # None: could not start
    timed_out: bool
    output: bytes  # at most OUTPUT_LIMIT bytes
    output_dropped: int  # bytes beyond the limit


def is_runnable(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


# Process groups of hooks running now, so a daemon that shuts down can end
# them instead of leaving them behind (see _Runner.stop).
_running: set[int] = set()
_running_lock = threading.Lock()


def run_hook(
    path: str | Path,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
    output_limit: int = OUTPUT_LIMIT,
) -> HookResult:
    """Runs one hook to completion (blocking) and returns what happened.
    Output beyond `output_limit` is read and dropped so the hook never
    blocks on a full pipe."""
    path = str(path)
    try:
        proc = subprocess.Popen(
            [path],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killable as a whole
            close_fds=True,
        )
    except OSError as e:
        return HookResult(path, None, False, f"cannot run: {e.strerror}".encode(), 0)

    with _running_lock:
        _running.add(proc.pid)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = bytearray()
    dropped = 0

    def take(chunk: bytes) -> None:
        nonlocal dropped
        keep = max(0, output_limit - len(out))
        out.extend(chunk[:keep])
        dropped += len(chunk) - len(chunk[:keep])

    deadline = time.monotonic() + timeout
    timed_out = False
    pidfd = _pidfd(proc.pid)  # readable when the hook exits: no polling needed
    try:
        reading = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                _kill_group(proc, pidfd)
                break
            watch = ([fd] if reading else []) + ([pidfd] if pidfd is not None else [])
            ready = _readable(watch, left if pidfd is not None else min(left, 0.1))
            if fd in ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    take(chunk)
                else:
                    reading = False
            if proc.poll() is not None:
                # Take what is already in the pipe, but do not wait for a
                # background child of the hook that still holds it open.
                while reading and time.monotonic() < deadline:
                    if not _readable([fd], 0):
                        break
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    take(chunk)
                break
    finally:
        with _running_lock:
            _running.discard(proc.pid)
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
    return HookResult(path, proc.returncode, timed_out, bytes(out), dropped)


def _readable(fds: list[int], timeout: float) -> list[int]:
    """The descriptors of `fds` that are readable (or hung up) within
    `timeout` seconds. poll(), not select(): a server with many clients
    holds descriptors numbered past select()'s limit of 1023."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    try:
        return [fd for fd, _ in p.poll(timeout * 1000)]
    except InterruptedError:
        return []


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(proc: subprocess.Popen, pidfd: int | None) -> None:
    """SIGTERM the hook's process group, then after a grace SIGKILL whatever
    is left of it. The leader is reaped only at the end: while it is
    unreaped (alive or a zombie) its id, and so the group's id, cannot be
    reused by an unrelated process."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.monotonic() + KILL_GRACE
    while time.monotonic() < end and not _exited(proc.pid):
        if pidfd is not None:
            _readable([pidfd], max(0.0, end - time.monotonic()))
        else:
            time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader too
    except ProcessLookupError:
        pass
    proc.wait()


def _exited(pid: int) -> bool:
    """Has the child exited? Does not reap it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _log_result(event: str, who: str, r: HookResult) -> None:
    text = r.output.decode("utf-8", "replace").rstrip()
    if r.output_dropped:
        text += f"\n... ({r.output_dropped} more bytes dropped)"
    tail = f"; output:\n{text}" if text else ""
    if r.returncode is None:
        log.error("%s hook %s for %s: %s", event, r.path, who, text)
    elif r.timed_out:
        log.error("%s hook %s for %s timed out and was killed%s", event, r.path, who, tail)
    elif r.returncode != 0:
        log.warning(
            "%s hook %s for %s exited with status %d%s", event, r.path, who, r.returncode, tail
        )
    else:
        log.info("%s hook %s for %s done%s", event, r.path, who, tail)


class _Runner:
    """Runs hooks on worker threads, in order per key."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[object, deque[Callable[[], None]]] = {}
        self._stopping = False
        self.on_result: Callable[[str, HookContext, HookResult], None] | None = None  # for tests

    def _submit(self, key: object, event: str, path: Path, ctx: HookContext) -> None:
        def job() -> None:
            who = ctx.client_id or ctx.interface or "(unnamed)"
            try:
                result = run_hook(path, ctx.environ(), self.timeout)
            except Exception:  # never let a hook take the worker down
                log.exception("%s hook %s for %s failed", event, path, who)
                return
            _log_result(event, who, result)
            if self.on_result is not None:
                self.on_result(event, ctx, result)

        with self._lock:
            q = self._queues.get(key)
            if q is not None:  # a worker for this key is busy: it will get to it
                q.append(job)
                return
            self._queues[key] = deque([job])
        threading.Thread(target=self._work, args=(key,), name="kcpvpn-hook", daemon=True).start()

    def _work(self, key: object) -> None:
        while True:
            with self._lock:
                q = self._queues[key]
                if not q:
                    del self._queues[key]
                    self._idle.notify_all()
                    return
                job = q[0]
                skip = self._stopping
            if skip:
                log.warning("a queued hook was not run: the daemon is shutting down")
            else:
                job()
            with self._lock:
                q.popleft()

    def stop(self, grace: float = 5.0) -> None:
        """At shutdown: queued hooks are not started; running ones get `grace`
        seconds, then their process groups are ended (SIGTERM, then SIGKILL),
        so no hook outlives the daemon."""
        with self._lock:
            self._stopping = True
        if self.wait(grace):
            return
        with _running_lock:
            groups = set(_running)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with _running_lock:
                groups |= _running
            # The whole group, every time: a hook's children may outlive it.
            for pgid in groups:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            self.wait(KILL_GRACE)

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until no hook is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queues, timeout)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queues)


def _context(
    client_id: str, interface: str, client_ip: str | None, ip_mode: int, remote_addr: str | tuple
) -> HookContext:
    return HookContext(client_id or "", interface or "", client_ip, ip_mode, remote_addr)


class HookRunner(_Runner):
    """The server's hooks from `--hook-dir`."""

    def __init__(self, hook_dir: str | Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(timeout)
        self.hook_dir = Path(hook_dir)

    def find(self, event: str, client_id: str) -> Path | None:
        """The hook to run for `event` and `client_id`, or None. An id that is
        not at most 16 bytes of A-Za-z0-9_- raises ValueError: it must never
        become part of a path."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; events are {', '.join(EVENTS)}")
        if client_id:
            why = client_id_problem(client_id)
            if why:
                raise ValueError(why)
            specific = self.hook_dir / f"on_{client_id}_{event}"
            if is_runnable(specific):
                return specific
            if specific.exists():
                log.warning("%s is not an executable regular file; skipped", specific)
        generic = self.hook_dir / f"on_{event}"
        if is_runnable(generic):
            return generic
        if generic.exists():
            log.warning("%s is not an executable regular file; skipped", generic)
        return None

    def run(
        self,
        event: str,
        *,
        client_id: str,
        interface: str,
        client_ip: str | None,
        ip_mode: int,
        remote_addr: str | tuple,
    ) -> Path | None:
        """Starts the matching hook in the background; returns its path (None
        when there is none, or the client id is refused)."""
        try:
            path = self.find(event, client_id)
        except ValueError as e:
            log.error("no %s hook run: %s", event, e)
            return None
        if path is None:
            return None
        ctx = _context(client_id, interface, client_ip, ip_mode, remote_addr)
        key = ("id", client_id) if client_id else ("if", interface)
        self._submit(key, event, path, ctx)
        return path


class ClientHooks(_Runner):
    """The client's `--on-connected-hook` / `--on-disconnected-hook`."""

    def __init__(
        self,
        on_connected: str | Path | None,
        on_disconnected: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(timeout)
        self.paths = {
            "connected": Path(on_connected) if on_connected else None,
            "disconnected": Path(on_disconnected) if on_disconnected else None,
        }

    def run(
        self,
        event: str,
        *,
        client_id: str,
        interface: str,
        client_ip: str | None,
        ip_mode: int,
        remote_addr: str | tuple,
    ) -> Path | None:
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; events are {', '.join(EVENTS)}")
        path = self.paths[event]
        if path is None:
            return None
        if not is_runnable(path):
            log.error("%s hook %s is not an executable regular file; not run", event, path)
            return None
        ctx = _context(client_id, interface, client_ip, ip_mode, remote_addr)
        self._submit("client", event, path, ctx)  # one client: all hooks in order
        return path
