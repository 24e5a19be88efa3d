"""The figures `kcpvpn status` and `kcpvpn top` show, computed from status
documents (status.py), so both views say the same thing the same way."""

from __future__ import annotations

from dataclasses import dataclass


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_rate(bytes_per_s: float) -> str:
    """Bits per second, short: '0', '850k', '12.3M', '1.4G'."""
    bits = bytes_per_s * 8
    if bits < 1:
        return "0"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bits >= scale:
            v = bits / scale
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{bits:.0f}"


@dataclass
class Row:
    """One session of a daemon, as the views name it."""

    key: str  # stable across documents: the daemon's socket + the session's identity
    client_id: str  # "" when none
    address: str  # tunnel address; "" when none
    interface: str
    remote: str
    session: dict  # the engine's figures (may lack "kcp" for a few ms after connecting)

    @property
    def who(self) -> str:
        return self.client_id or "-"


def rows(doc: dict, source: str = "") -> list[Row]:
    """The sessions of a server ("clients") or client ("sessions") document."""
    out = []
    if doc.get("mode") == "server":
        for c in doc.get("clients", []):
            out.append(
                Row(
                    key=f"{source}|{c.get('interface')}|{c.get('session_id')}",
                    client_id=c.get("client_id") or "",
                    address=c.get("ip") or "",
                    interface=c.get("interface") or "",
                    remote=c.get("remote") or "",
                    session=c,
                )
            )
    else:
        for s in doc.get("sessions", []):
            out.append(
                Row(
                    key=f"{source}|{s.get('session_id')}",
                    client_id=doc.get("client_id") or "",
                    address=doc.get("ip") or "",
                    interface=doc.get("interface") or "",
                    remote=doc.get("server") or "",
                    session={
                        "since": doc.get("since"),
                        "tun_queue_drops": doc.get("tun_queue_drops"),
                        **s,
                    },
                )
            )
    return out


def resent(s: dict) -> int:
    k = s.get("kcp", {})
    return k.get("retransmits", 0) + k.get("fast_retransmits", 0)


def dropped(s: dict) -> int:
    return s.get("auth_failures", 0) + s.get("replays", 0) + s.get("malformed", 0)


def up_down_bytes(mode: str, s: dict) -> tuple[int, int]:
    """Bytes carried toward the server (up) and toward the client (down).
    The engine counts from the interface's side: bytes_in entered the tunnel
    here, bytes_out left it here."""
    sent, received = s.get("bytes_in", 0), s.get("bytes_out", 0)
    return (received, sent) if mode == "server" else (sent, received)


def wire_ratio(s: dict) -> float:
    wire = s.get("wire_bytes_out", 0) + s.get("wire_bytes_in", 0)
    payload = s.get("bytes_in", 0) + s.get("bytes_out", 0)
    return wire / payload if payload else 0.0


def uptime(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 86400}d{s // 3600 % 24:02d}h"
