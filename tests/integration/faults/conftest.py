"""Helpers of the fault suite: real daemons in lab namespaces, faults made
from outside as an operator or an attacker would make them."""

from __future__ import annotations

import os
import time

from kcpvpn_lab.topology import Host
from kcpvpn_lab.vpn import daemon_status

SERVER_IP = "192.168.88.1"
SERVER_FLAGS = ("--local-ip", SERVER_IP, "--assignable-ips", "192.168.88.0/24")
PORT = 4000


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kvs(host: Host) -> list[str]:
    return sorted(n for n in host.links() if n.startswith("kvs"))


def connected(proc) -> bool:
    try:
        return daemon_status(proc)["state"] == "connected"
    except (OSError, ValueError, KeyError):
        return False


def wait_for(cond, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `cond()` held, or None if it did not within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(interval)
    return None
