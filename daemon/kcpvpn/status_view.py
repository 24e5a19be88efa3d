"""Renders a daemon's status document (see status.py) as rich tables."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def session_row(s: dict) -> list[str]:
    k = s.get("kcp", {})
    sent = max(1, k.get("segments_sent", 0))
    resent = k.get("retransmits", 0) + k.get("fast_retransmits", 0)
    wire = s.get("wire_bytes_out", 0) + s.get("wire_bytes_in", 0)
    payload = max(1, s.get("bytes_in", 0) + s.get("bytes_out", 0))
    return [
        f"{k.get('srtt_ms', 0)} ms",
        f"{resent} ({100 * resent / sent:.1f}%)",
        str(s.get("fec_recovered", 0)),
        f"{s.get('fec_parity', 0)} ({s.get('fec_loss_ppm', 0) / 1e4:.1f}%)",
        human_bytes(s.get("bytes_in", 0)),
        human_bytes(s.get("bytes_out", 0)),
        f"{wire / payload:.2f}",
        str(s.get("auth_failures", 0) + s.get("replays", 0) + s.get("malformed", 0)),
    ]


STAT_COLUMNS = [
    "RTT",
    "resent",
    "FEC fixed",
    "parity (loss)",
    "sent",
    "received",
    "wire/payload",
    "dropped",
]


def render(doc: dict, path: str, console: Console | None = None) -> None:
    console = console or Console()
    up = time.time() - doc.get("started", time.time())
    if doc.get("mode") == "server":
        t = Table(
            title=f"kcpvpn server {doc.get('listen')} ({doc.get('vni_mode')}), "
            f"pid {doc.get('pid')}, up {int(up)} s — {path}"
        )
        for col in ["client", "interface", "address", "remote", *STAT_COLUMNS]:
            t.add_column(col)
        for c in doc.get("clients", []):
            t.add_row(
                c.get("client_id") or "-",
                c.get("interface", "-"),
                c.get("ip") or "-",
                c.get("remote", "-"),
                *session_row(c),
            )
        console.print(t)
    else:
        t = Table(
            title=f"kcpvpn client → {doc.get('server')}: {doc.get('state')}, "
            f"pid {doc.get('pid')}, up {int(up)} s — {path}"
        )
        for col in ["interface", "address", *STAT_COLUMNS]:
            t.add_column(col)
        for s in doc.get("sessions", []):
            t.add_row(doc.get("interface") or "-", doc.get("ip") or "-", *session_row(s))
        console.print(t)
