"""`kcpvpn top`: a live view of every kcpvpn daemon on this host.

Once a second it reads each daemon's status socket (status.py), turns the
counters into rates and keeps a short history per session, drawn as a
sparkline under each figure. Each session takes two lines (figures, then
their sparklines), so seven of the eight figures fit in 80 columns (all
from 87); narrower
terminals drop the least important columns, wider ones get longer
sparklines. Keys: q quits, s sorts by the next column, r reverses.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .. import status as st
from .figures import Row, human_rate, resent, rows, up_down_bytes, uptime

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY = 60  # samples kept per figure (a minute at the default refresh)


def sparkline(values: Sequence[float | None], width: int) -> str:
    """The last `width` values as bars scaled from 0 to their maximum
    (a blank for a value not known yet)."""
    tail = list(values)[-width:] if width > 0 else []
    known = [v for v in tail if v is not None]
    top = max(known, default=0.0)
    out = []
    for v in tail:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))])
    return "".join(out).rjust(width)


def _ms(v: float | None) -> str:
    return "…" if v is None else f"{v:.0f}ms"


def _rate(v: float | None) -> str:
    return "…" if v is None else human_rate(v)


def _pct(v: float | None) -> str:
    return "…" if v is None else f"{v:.1f}%"


def _per_s(v: float | None) -> str:
    if v is None:
        return "…"
    return f"{v:.0f}/s" if v >= 10 or v == 0 else f"{v:.1f}/s"


def _plain(v: float | None) -> str:
    return "…" if v is None else f"{v:.2f}"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: Callable[[float | None], str]
    rank: int  # lower = kept longer when the terminal is narrow


# Shown in this order; dropped highest rank first.
COLUMNS = (
    Column("rtt", "RTT", _ms, 0),
    Column("up", "up b/s", _rate, 2),
    Column("down", "down b/s", _rate, 1),
    Column("loss", "loss", _pct, 3),
    Column("parity", "parity", _plain, 7),
    Column("resent", "resent", _per_s, 4),
    Column("fec", "FEC fix", _per_s, 6),
    # How long packets waited at the tunnel's entry (flow queueing): the
    # first figure to read when pings slow down under load.
    Column("queue", "queue", _ms, 5),
)
SORT_KEYS = ("name", *(c.key for c in COLUMNS))

NAME_WIDTH = 15  # client id on the first line, tunnel address on the second
MIN_COLUMN = 8
MAX_COLUMN = 16


def layout(width: int) -> tuple[list[Column], int]:
    """The columns that fit in `width` and the width of each (figures are
    right-aligned in it; the sparkline under a figure is as wide)."""
    cols = sorted(COLUMNS, key=lambda c: c.rank)
    while cols and NAME_WIDTH + len(cols) * (MIN_COLUMN + 1) > width:
        cols.pop()
    if not cols:
        return [], 0
    col_w = min(MAX_COLUMN, (width - NAME_WIDTH) // len(cols) - 1)
    shown = [c for c in COLUMNS if c in cols]
    return shown, col_w


@dataclass
class Track:
    """One session's recent samples and the counters of the last document."""

    history: dict[str, deque] = field(
        default_factory=lambda: {c.key: deque(maxlen=HISTORY) for c in COLUMNS}
    )
    counters: dict[str, float] | None = None
    at: float = 0.0
    seen: float = 0.0

    def latest(self, key: str) -> float | None:
        h = self.history[key]
        return h[-1] if h else None


def _counters(mode: str, s: dict) -> dict[str, float]:
    up, down = up_down_bytes(mode, s)
    return {"up": up, "down": down, "resent": resent(s), "fec": s.get("fec_recovered", 0)}


@dataclass
class Source:
    """One daemon: its socket, its last document or why there is none."""

    path: str
    doc: dict | None = None
    problem: str | None = None


Reader = Callable[[str], dict]


class Top:
    """The model of the view: sources, their sessions' tracks, the sort.
    `poll()` reads every source once; `frame()` draws the current state."""

    def __init__(
        self,
        sockets: Sequence[str] = (),
        read: Reader = st.read,
        clock: Callable[[], float] = time.monotonic,
        find: Callable[[], list[str]] = st.find_sockets,
    ) -> None:
        self.fixed = list(sockets)
        self.read = read
        self.clock = clock
        self.find = find
        self.sources: dict[str, Source] = {}
        self.tracks: dict[str, Track] = {}
        self.sort = "name"
        self.reverse = False

    # -- input ----------------------------------------------------------------
    def key(self, ch: str) -> bool:
        """Handles a key press; False when it asks to quit."""
        if ch in ("q", "Q", "\x03"):
            return False
        if ch == "s":
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        elif ch == "S":
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) - 1) % len(SORT_KEYS)]
        elif ch == "r":
            self.reverse = not self.reverse
        return True

    # -- data -------------------------------------------------------------------
    def poll(self) -> None:
        paths = self.fixed or self.find()
        now = self.clock()
        for p in list(self.sources):
            if p not in paths:
                del self.sources[p]
        for p in paths:
            src = self.sources.setdefault(p, Source(p))
            try:
                src.doc, src.problem = self.read(p), None
            except (OSError, ValueError) as e:
                src.doc, src.problem = None, st.read_problem(p, e)
                continue
            mode = src.doc.get("mode", "")
            for row in rows(src.doc, p):
                self._sample(mode, row, now)
        # Sessions gone for a while leave no history behind.
        for k in [k for k, t in self.tracks.items() if now - t.seen > 10]:
            del self.tracks[k]

    def _sample(self, mode: str, row: Row, now: float) -> None:
        s = row.session
        t = self.tracks.setdefault(row.key, Track())
        t.seen = now
        if "kcp" not in s:
            return  # the engine has not published this session's figures yet
        h = t.history
        h["rtt"].append(float(s["kcp"].get("srtt_ms", 0)))
        h["loss"].append(s.get("loss_ppm", 0) / 1e4)
        h["parity"].append(float(s.get("fec_parity", 0)))
        h["queue"].append(float(s.get("queue_delay_ms", 0)))
        counters = _counters(mode, s)
        dt = now - t.at
        for key, value in counters.items():
            if t.counters is None or dt <= 0:
                h[key].append(None)
            else:
                # A counter that went down belongs to a new session: rate unknown.
                delta = value - t.counters[key]
                h[key].append(delta / dt if delta >= 0 else None)
        t.counters, t.at = counters, now

    # -- drawing ----------------------------------------------------------------
    def _sorted(self, found: list[Row]) -> list[Row]:
        if self.sort == "name":
            return sorted(found, key=lambda r: (r.who, r.address), reverse=self.reverse)

        def value(r: Row) -> float:
            t = self.tracks.get(r.key)
            v = t.latest(self.sort) if t else None
            return -1.0 if v is None else v

        # Figures sort largest first (the busiest or worst session on top).
        return sorted(found, key=value, reverse=not self.reverse)

    def frame(self, width: int, height: int, now: float | None = None) -> Text:
        cols, col_w = layout(width)
        wall = time.time() if now is None else now
        out = Text(no_wrap=True, overflow="crop")
        order = "↑" if self.reverse else "↓"
        if self.sort == "name":
            order = "↓" if self.reverse else "↑"
        title = next((c.title for c in COLUMNS if c.key == self.sort), "name")
        out.append("kcpvpn top", style="bold")
        out.append(f" · {len(self.sources)} daemon{'s' if len(self.sources) != 1 else ''}")
        out.append(f" · sort: {title} {order}")
        out.append(" · s sort  r reverse  q quit\n", style="dim")
        lines = 1
        if not self.sources:
            out.append(
                f"no daemon found (no status socket in {st.RUN_DIR}); "
                "pass --socket PATH for one with --status-socket\n",
                style="yellow",
            )
        hidden = 0
        for src in self.sources.values():
            for line in self._daemon_block(src, cols, col_w, width, wall):
                if lines >= height - 1:  # the last line is kept for the notice
                    hidden += 1
                    continue
                out.append_text(line)
                out.append("\n")
                lines += 1
        if hidden:
            out.append(f"… {hidden} more lines: enlarge the terminal", style="dim")
        return out

    def _daemon_block(
        self, src: Source, cols: list[Column], col_w: int, width: int, wall: float
    ) -> list[Text]:
        lines: list[Text] = []
        head = Text(no_wrap=True, overflow="ellipsis")
        if src.doc is None:
            head.append(f"{src.path}: {src.problem}", style="red")
            head.truncate(width, overflow="ellipsis")
            return [head]
        doc = src.doc
        up = uptime(wall - doc.get("started", wall))
        if doc.get("mode") == "server":
            n = len(doc.get("clients", []))
            head.append(f"server {doc.get('listen')}", style="bold")
            head.append(f" {doc.get('vni_mode')} · {n} client{'s' if n != 1 else ''}")
        else:
            head.append(f"client → {doc.get('server')}", style="bold")
            head.append(f" · {doc.get('state')}")
        head.append(f" · pid {doc.get('pid')} · up {up} · {src.path}", style="dim")
        head.truncate(width, overflow="ellipsis")
        lines.append(head)
        found = self._sorted(rows(doc, src.path))
        if not found:
            what = "no clients" if doc.get("mode") == "server" else f"no session ({doc['state']})"
            lines.append(Text(f"  {what}", style="yellow"))
            return lines
        titles = Text("client".ljust(NAME_WIDTH), style="bold underline")
        for c in cols:
            titles.append(" ")
            titles.append(c.title[:col_w].rjust(col_w), style="bold underline")
        lines.append(titles)
        for row in found:
            t = self.tracks.get(row.key) or Track()
            first = Text(_fit(row.who, NAME_WIDTH), style="cyan")
            second = Text(_fit(row.address or "-", NAME_WIDTH), style="dim")
            for c in cols:
                first.append(" " + c.fmt(t.latest(c.key)).rjust(col_w)[-col_w:])
                second.append(" " + sparkline(t.history[c.key], col_w), style="green")
            lines += [first, second]
        return lines


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


class _Keys:
    """Single key presses from a terminal (cbreak mode while open)."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
        self._old: list[Any] | None = None

    def __enter__(self) -> _Keys:
        if self.fd is not None:
            self._old = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None and self.fd is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._old)

    def wait(self, timeout: float) -> str | None:
        """The next key, or None after `timeout` seconds."""
        if self.fd is None:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 32).decode(errors="replace")
        return data[:1] or None


def run(sockets: Sequence[str], interval: float = 1.0, console: Console | None = None) -> int:
    """The live view until q (or Ctrl-C)."""
    console = console or Console()
    top = Top(sockets)
    try:
        with _Keys() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
            next_poll = 0.0
            while True:
                if time.monotonic() >= next_poll:
                    top.poll()
                    next_poll = time.monotonic() + interval
                live.update(top.frame(console.width, console.height), refresh=True)
                ch = keys.wait(max(0.0, next_poll - time.monotonic()))
                if ch is not None and not top.key(ch):
                    return 0
    except KeyboardInterrupt:
        return 0
