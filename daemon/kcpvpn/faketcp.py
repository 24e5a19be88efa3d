"""Fake TCP's footprint on the host: one nftables table of this process's own.

The data path sends and receives TCP segments on raw sockets, so no socket
of the host's TCP stack owns the flow, and the stack answers each segment
with a reset. The table drops those resets (they leave through the output
hook) and nothing else. It is named after the daemon's PID, removed on
exit, and a table left by a daemon that was killed (SIGKILL) is removed at
the next start of any kcpvpn daemon in the same network namespace."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("kcpvpn")

TABLE_PREFIX = "kcpvpn_tcp_"
_TABLE_RE = re.compile(rf"^{TABLE_PREFIX}(\d+)$")


class FirewallError(RuntimeError):
    pass


def _nft(args: list[str], stdin: str | None = None) -> str:
    exe = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(exe):
        raise FirewallError(
            "--tcp needs nftables (the nft command) to keep the host's TCP stack from "
            "resetting the fake-TCP flow: install the nftables package"
        )
    r = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise FirewallError(f"nft {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def _is_kcpvpn(pid: int) -> bool:
    """Whether `pid` is a live kcpvpn daemon (a table of a live one stays)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kcpvpn" in cmdline


def tables() -> list[str]:
    """The fake-TCP tables in this network namespace."""
    doc = json.loads(_nft(["-j", "list", "tables", "inet"]) or '{"nftables": []}')
    return [
        t["table"]["name"]
        for t in doc.get("nftables", [])
        if "table" in t and t["table"]["name"].startswith(TABLE_PREFIX)
    ]


def clean_stale() -> list[str]:
    """Removes tables whose daemon is gone (killed without its cleanup)."""
    removed = []
    for name in tables():
        m = _TABLE_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and _is_kcpvpn(int(m.group(1))):
            continue
        _nft(["delete", "table", "inet", name])
        removed.append(name)
    if removed:
        log.info("removed fake-TCP firewall tables left by a stopped daemon: %s", removed)
    return removed


class ResetGuard:
    """The table of this daemon; `remove()` (idempotent) takes it away."""

    def __init__(self, rule: str) -> None:
        clean_stale()
        self.name = f"{TABLE_PREFIX}{os.getpid()}"
        _nft(
            ["-f", "-"],
            stdin=(
                f"table inet {self.name} {{\n"
                "  chain output {\n"
                "    type filter hook output priority filter; policy accept;\n"
                f"    {rule} tcp flags & rst == rst counter drop\n"
                "  }\n"
                "}\n"
            ),
        )
        self._active = True

    def remove(self) -> None:
        if not self._active:
            return
        self._active = False
        try:
            _nft(["delete", "table", "inet", self.name])
        except FirewallError as e:
            log.warning("could not remove the fake-TCP firewall table %s: %s", self.name, e)


def server_guard(port: int) -> ResetGuard:
    """Drops the host stack's resets from our port."""
    return ResetGuard(f"tcp sport {port}")


def client_guard(server: tuple[str, int]) -> ResetGuard:
    """Drops the host stack's resets to the server's address and port."""
    ip = ipaddress.ip_address(server[0])
    fam = "ip6" if ip.version == 6 else "ip"
    return ResetGuard(f"{fam} daddr {ip} tcp dport {server[1]}")


# Datagrams in TCP mode are 12 bytes shorter than in UDP mode at the same
# --mtu: a TCP header is 20 bytes, a UDP header 8; the IP packets stay the
# same size.
TCP_EXTRA = 12
