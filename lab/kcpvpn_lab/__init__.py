"""kcpvpn lab: network namespaces, an emulated bad link and probes.

- `kcpvpn_lab.topology`: `Topology` (declarative, context-managed), `Host`, `clean()`.
- `kcpvpn_lab.emulator`: the link emulator process and its control client.
- `kcpvpn_lab._emulator`: the native emulator itself (`LinkEmulator`, from lab/native).
- `kcpvpn_lab.vpn`: kcpvpn daemons in lab hosts, watched through their status sockets.
- `kcpvpn_lab.probes`: UDP flows, ping percentiles, ICMP/UDP/TCP/ARP/Ethernet probes, iperf3.
- `kcpvpn_lab.cli`: `kcpvpn-lab` / `kcpvpn lab` (clean, list, up, demo, bench-emulator, bench).
"""

from typing import Any

__all__ = ["Host", "Topology", "clean"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m kcpvpn_lab.emulator` does not import pyroute2.
    if name in __all__:
        from . import topology

        return getattr(topology, name)
    raise AttributeError(name)
