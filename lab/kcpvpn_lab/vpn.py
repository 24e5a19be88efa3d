"""Running kcpvpn daemons in lab hosts: the server and clients as real
processes, started with the same command line a user types."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .process import HostProcess
from .topology import Host

SECRET = "lab-secret-correct-horse-battery"
PORT = 4000


def kcpvpn_argv() -> list[str]:
    """The kcpvpn command of the Python running the lab (its venv's script)."""
    here = Path(sys.executable).parent / "kcpvpn"
    if here.exists():
        return [str(here)]
    found = shutil.which("kcpvpn")
    if found:
        return [found]
    return [sys.executable, "-m", "kcpvpn"]


class DaemonFailed(RuntimeError):
    pass


def _wait(proc: HostProcess, pattern: str, timeout: float, what: str) -> re.Match:
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        m = rx.search(proc.log())
        if m:
            return m
        if not proc.alive():
            break
        time.sleep(0.05)
    raise DaemonFailed(f"{what} did not come up ({proc!r}); its log:\n{proc.log()}")


def start_server(
    host: Host,
    *flags: str,
    secret: str = SECRET,
    port: int = PORT,
    wait: bool = True,
    timeout: float = 20.0,
) -> HostProcess:
    """`kcpvpn server --port PORT FLAGS` in `host`; waits until it listens."""
    argv = [*kcpvpn_argv(), "server", "--port", str(port), *flags]
    proc = host.popen(argv, name="kcpvpn-server", env={"KCPVPN_KEY": secret})
    if wait:
        _wait(proc, r"listening on", timeout, "kcpvpn server")
    return proc


def start_client(
    host: Host,
    server: Host | str,
    *flags: str,
    secret: str = SECRET,
    port: int = PORT,
    wait: bool = True,
    timeout: float = 30.0,
) -> HostProcess:
    """`kcpvpn client --ip SERVER --port PORT FLAGS` in `host`; waits until connected."""
    addr = server if isinstance(server, str) else str(server.address)
    argv = [*kcpvpn_argv(), "client", "--ip", addr, "--port", str(port), *flags]
    proc = host.popen(argv, name="kcpvpn-client", env={"KCPVPN_KEY": secret})
    if wait:
        _wait(proc, r"connected to", timeout, "kcpvpn client")
    return proc


def client_address(proc: HostProcess) -> str:
    """The tunnel address the client reported in its log."""
    m = re.search(r"connected to \S+: interface \S+ \(\w+\), address (\S+),", proc.log())
    if not m:
        raise DaemonFailed(f"no address in the client's log:\n{proc.log()}")
    return m.group(1)


def wait_connected_again(proc: HostProcess, after: int, timeout: float = 30.0) -> None:
    """Waits for the client's log to report more than `after` connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.log().count("connected to ") > after:
            return
        if not proc.alive():
            break
        time.sleep(0.1)
    raise DaemonFailed(f"the client did not reconnect; its log:\n{proc.log()}")


def ping(
    host: Host,
    address: str,
    count: int = 3,
    size: int = 56,
    interval: float = 0.2,
    extra: Sequence[str] = (),
) -> str:
    """Pings through the tunnel; raises with ping's output when any is lost."""
    r = host.run(
        [
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-s",
            str(size),
            "-W",
            "2",
            *extra,
            address,
        ],
        check=False,
        timeout=count * interval + 15,
    )
    if r.returncode != 0:
        raise AssertionError(f"ping {address} from {host.name} failed:\n{r.stdout}{r.stderr}")
    return r.stdout
