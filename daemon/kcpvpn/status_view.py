"""Renders a daemon's status document (see status.py) for `kcpvpn status`.

One header line per daemon, then four short lines per session, so that
every figure stays readable in an 80-column terminal (a table of a dozen
columns needed about 200)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.text import Text

from .observe.figures import (
    Row,
    dropped,
    human_bytes,
    resent,
    rows,
    uptime,
    wire_ratio,
)


def header(doc: dict, path: str, now: float | None = None) -> Text:
    now = time.time() if now is None else now
    up = uptime(now - doc.get("started", now))
    t = Text()
    if doc.get("mode") == "server":
        n = len(doc.get("clients", []))
        t.append(f"kcpvpn server {doc.get('listen')}", style="bold")
        t.append(f" ({doc.get('vni_mode')}) · {n} client{'s' if n != 1 else ''}")
    else:
        t.append(f"kcpvpn client → {doc.get('server')}", style="bold")
        t.append(f" · {doc.get('state')}")
    t.append(f" · pid {doc.get('pid')} · up {up}")
    t.append(f"\n  {path}", style="dim")
    return t


def session_lines(mode: str, row: Row, now: float | None = None) -> Text:
    s = row.session
    k = s.get("kcp", {})
    sent_segments = max(1, k.get("segments_sent", 0))
    n_resent = resent(s)
    t = Text()
    if mode == "server":
        t.append(f"  {row.who}", style="bold cyan")
        t.append(f"  {row.address or 'no address'} on {row.interface} from {row.remote}")
    else:
        t.append(f"  {row.interface}", style="bold cyan")
        t.append(f"  {row.address or 'no address'}")
    since = s.get("since")
    if since:
        now = time.time() if now is None else now
        t.append(f" · {uptime(now - since)}")
    t.append(
        f"\n    RTT {k.get('srtt_ms', 0)} ms · resent {n_resent} "
        f"({100 * n_resent / sent_segments:.1f}%) · FEC fixed {s.get('fec_recovered', 0)} · "
        f"parity {s.get('fec_parity', 0)} (loss {s.get('loss_ppm', 0) / 1e4:.1f}%)"
    )
    t.append(
        f"\n    sent {human_bytes(s.get('bytes_in', 0))} · "
        f"received {human_bytes(s.get('bytes_out', 0))} · "
        f"wire/payload {wire_ratio(s):.2f} · dropped {dropped(s)}"
    )
    t.append(
        f"\n    queue {s.get('queue_delay_ms', 0)} ms (max {s.get('max_queue_delay_ms', 0)}) · "
        f"waiting {human_bytes(s.get('queued_bytes', 0))} · CoDel drops "
        f"{s.get('codel_drops', 0)} · ECN marks {s.get('ecn_marks', 0)}"
    )
    # The interface: offload path or packet by packet, and what its queue dropped.
    if "offload" in s:
        drops = s.get("tun_queue_drops")
        t.append(
            f"\n    interface {'offload (TSO/merged)' if s['offload'] else 'packet by packet'}"
            + ("" if drops is None else f" · queue drops {drops}")
        )
    return t


def render(doc: dict, path: str, console: Console | None = None) -> None:
    console = console or Console()
    console.print(header(doc, path))
    found = rows(doc, path)
    if not found:
        if doc.get("mode") == "server":
            console.print("  no clients", style="yellow")
        else:
            console.print(f"  no session ({doc.get('state')})", style="yellow")
    for row in found:
        console.print(session_lines(doc.get("mode", ""), row))
    console.print()
