"""wireguard-go between the server and client1 of a lab topology: the
reference VPN of the bench.

`wireguard-go -f IF` runs in each namespace as a lab process; `wg set` and
`ip` configure keys, peer, addresses and MTU. Interface names carry the
topology's random id: wireguard-go's control socket lives at
/var/run/wireguard/IF.sock, a path every namespace shares, so parallel runs
must not reuse a name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..process import HostProcess
from ..topology import Host, Topology

SERVER_IP = "192.168.99.1"
CLIENT_IP = "192.168.99.2"
PREFIX_LEN = 24
PORT = 51820
MTU = 1420
UAPI_DIR = Path("/var/run/wireguard")
# wireguard-go refuses to start on Linux without this (it would rather see the kernel module).
ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
INSTALL = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
PACKAGES = ["wireguard-go", "wireguard-tools"]


def missing_tools() -> list[str]:
    return [t for t in ("wireguard-go", "wg") if shutil.which(t) is None]


def ensure_installed(log=print) -> str | None:
    """None when wireguard-go and wg are there (installing them with apt-get
    when missing and root), else why not."""
    if not missing_tools():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"missing {' '.join(missing_tools())} (install the Debian packages {PACKAGES})"
    log(f"installing {' '.join(PACKAGES)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"], env=env, timeout=300, check=True, capture_output=True
        )
        subprocess.run([*INSTALL, *PACKAGES], env=env, timeout=600, check=True, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        return f"apt-get could not install {PACKAGES}: {e} {detail.decode(errors='replace')[-300:]}"
    if missing_tools():
        return f"still missing after apt-get: {' '.join(missing_tools())}"
    return None


def version() -> str | None:
    if shutil.which("wireguard-go") is None:
        return None
    try:
        r = subprocess.run(
            ["wireguard-go", "--version"], capture_output=True, text=True, timeout=10
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return (r.stdout.strip().splitlines() or ["?"])[0]


def _genkey(host: Host) -> tuple[str, str]:
    private = host.run(["wg", "genkey"], timeout=10).stdout.strip()
    public = host.run(["wg", "pubkey"], input=private.encode(), timeout=10).stdout.strip()
    return private, public


class WireGuardPair:
    """wireguard-go on topo.server (SERVER_IP) and topo.client(1) (CLIENT_IP).
    `up()` raises with the processes' logs when something fails; `down()`
    stops both processes by PID and removes interfaces and sockets, safe to
    call twice (and called by `up()` on failure)."""

    def __init__(self, topo: Topology, client: Host | None = None):
        self.topo = topo
        self.server = topo.server
        self.client = client or topo.client(1)
        self.ifnames = {"server": f"wb{topo.id}s", "client": f"wb{topo.id}c"}
        self.procs: dict[str, HostProcess] = {}
        self.commands: list[str] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def alive(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs.values())

    def _run(self, host: Host, argv: list[str]) -> None:
        self.commands.append(f"[{host.name}] {' '.join(argv)}")
        host.run(argv, timeout=15)

    def _start(self, role: str, host: Host) -> None:
        ifname = self.ifnames[role]
        argv = ["wireguard-go", "-f", ifname]
        self.commands.append(
            f"[{host.name}] WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 {' '.join(argv)}"
        )
        proc = host.popen(argv, name=f"wireguard-go-{role}", env=ENV)
        self.procs[role] = proc
        deadline = time.monotonic() + 10
        sock = UAPI_DIR / f"{ifname}.sock"
        while not (sock.exists() and ifname in host.links()):
            if not proc.alive():
                raise RuntimeError(f"wireguard-go exited in {host.name}:\n{proc.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"wireguard-go made no {ifname} / {sock} within 10 s:\n{proc.log()}"
                )
            time.sleep(0.05)

    def up(self) -> WireGuardPair:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        keydir = self.topo.run_dir / "wireguard"
        keydir.mkdir(mode=0o700, exist_ok=True)
        keys = {}
        for role, host in (("server", self.server), ("client", self.client)):
            private, public = _genkey(host)
            path = keydir / f"{role}.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(private + "\n")
            keys[role] = (path, public)
        self._start("server", self.server)
        self._start("client", self.client)
        s_if, c_if = self.ifnames["server"], self.ifnames["client"]
        self._run(
            self.server,
            [
                "wg", "set", s_if, "listen-port", str(PORT),
                "private-key", str(keys["server"][0]),
                "peer", keys["client"][1], "allowed-ips", f"{CLIENT_IP}/32",
            ],
        )  # fmt: skip
        self._run(
            self.client,
            [
                "wg", "set", c_if, "private-key", str(keys["client"][0]),
                "peer", keys["server"][1], "allowed-ips", f"{SERVER_IP}/32",
                "endpoint", f"{self.server.address}:{PORT}",
            ],
        )  # fmt: skip
        for host, ifname, ip in ((self.server, s_if, SERVER_IP), (self.client, c_if, CLIENT_IP)):
            self._run(host, ["ip", "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", ifname])
            self._run(host, ["ip", "link", "set", ifname, "mtu", str(MTU), "up"])

    def down(self) -> None:
        for role, proc in list(self.procs.items()):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)
            host = self.server if role == "server" else self.client
            ifname = self.ifnames[role]
            with contextlib.suppress(Exception):
                if ifname in host.links():
                    host.run(["ip", "link", "del", ifname], timeout=10, check=False)
            with contextlib.suppress(OSError):
                (UAPI_DIR / f"{ifname}.sock").unlink(missing_ok=True)
            self.procs.pop(role, None)
