"""`kcpvpn lab demo`: a server and N clients over an emulated bad link, real
daemons, real traffic, live figures.

What runs: a Topology (namespaces, the emulator with delay and loss each
way); `kcpvpn server` in the server host and `kcpvpn client` in each client
host, each with a status socket in the run directory; in each client a ping
stream to the server's tunnel address (what an application feels) and a
modest iperf3 TCP flow (goodput). Once a second the table is redrawn from the
daemons' status sockets (kcpvpn.status), the ping logs and the emulator's
counters. Ctrl-C (or the end of --duration) tears everything down and checks
that no namespace of the run is left.
"""

from __future__ import annotations

import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import iperf
from .probes import percentile
from .process import HostProcess
from .topology import Host, Topology, lab_namespaces
from .vpn import (
    DaemonFailed,
    client_address,
    read_status,
    sessions_of,
    start_client,
    start_server,
    status_socket,
    wait_reachable,
)

POLL = 0.05  # seconds between reads of the status sockets
SERVER_IP = "192.168.88.1"
POOL = "192.168.88.0/24"
IPERF_PORT = 5201
_PING = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


class _Series:
    """One daemon's counters over time, each snapshot stamped when first seen.

    The daemons publish their figures every 250 ms, each on its own schedule,
    so the latest documents of two daemons describe different moments; with a
    few thousand datagrams a second that skew alone reads as percents of
    loss. The demo polls every POLL seconds and compares both ends at one
    moment by interpolating between snapshots."""

    def __init__(self) -> None:
        self.points: deque[tuple[float, dict[str, float]]] = deque(maxlen=64)

    def add(self, t: float, values: dict[str, float]) -> None:
        if not self.points or self.points[-1][1] != values:
            self.points.append((t, values))

    @property
    def latest(self) -> float | None:
        return self.points[-1][0] if self.points else None

    def at(self, t: float, key: str) -> float:
        """The counter `key` at time `t` (the oldest value before the first point)."""
        pts = self.points
        if t >= pts[-1][0]:
            return pts[-1][1][key]
        newest_first = list(reversed(pts))
        for (t1, v1), (t0, v0) in zip(newest_first, newest_first[1:], strict=False):
            if t0 <= t <= t1:
                return v0[key] + (v1[key] - v0[key]) * (t - t0) / (t1 - t0)
        return pts[0][1][key]


_FIGURES = ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out")


def _figures(s: dict) -> dict[str, float]:
    return {k: s[k] for k in _FIGURES}


@dataclass
class _Client:
    index: int
    host: Host
    daemon: HostProcess
    sock: str
    ip: str
    ping: HostProcess | None = None
    iperf: HostProcess | None = None
    ping_pos: int = 0  # bytes of the ping log already parsed
    rtts: deque = field(default_factory=lambda: deque(maxlen=100))
    doc: dict[str, Any] = field(default_factory=dict)  # latest client session figures
    mine: _Series = field(default_factory=_Series)  # the client's session
    peer: _Series = field(default_factory=_Series)  # the server's session for this client

    def read_pings(self) -> None:
        if self.ping is None:
            return
        try:
            with open(self.ping.log_path, "rb") as f:
                f.seek(self.ping_pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self.ping_pos += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            m = _PING.search(line)
            if m and "DUP!" not in line:
                self.rtts.append(float(m.group(2)))


def _kcp_resent(s: dict) -> int:
    k = s.get("kcp", {})
    return k.get("retransmits", 0) + k.get("fast_retransmits", 0)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


class Demo:
    def __init__(
        self,
        clients: int = 2,
        delay_ms: float = 20.0,
        loss: float = 0.05,
        rapid_fec: bool = True,
        rate_mbit: float = 4.0,
        ping_interval: float = 0.2,
        seed: int | None = None,
        console: Console | None = None,
    ):
        self.n = clients
        self.delay_ms = delay_ms
        self.loss = loss
        self.rapid_fec = rapid_fec
        self.rate_mbit = rate_mbit
        self.ping_interval = ping_interval
        self.console = console or Console()
        if not self.console.is_terminal:
            # A pipe or a CI log: no width to fit, so don't squash the table.
            self.console = Console(width=max(self.console.width, 130), force_terminal=False)
        self.topo = Topology(
            clients=clients, impair={"delay_ms": delay_ms, "loss": loss}, seed=seed
        )
        self.server: HostProcess | None = None
        self.server_sock = ""
        self.clients: list[_Client] = []
        self.server_rows: dict[str, dict[str, Any]] = {}  # by client tunnel address
        self.started = 0.0

    # --- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        t = self.topo
        fec = ("--rapid-fec",) if self.rapid_fec else ("--no-rapid-fec",)
        self.server_sock = status_socket(t.server, "server")
        self.console.print(
            f"lab [bold]{t.prefix}[/bold]: server + {self.n} client(s), "
            f"{self.delay_ms:g} ms each way (RTT {2 * self.delay_ms:g} ms), "
            f"{self.loss:.0%} random loss each way, emulator seed {t.seed}"
        )
        self.server = start_server(
            t.server,
            "--local-ip",
            SERVER_IP,
            "--assignable-ips",
            POOL,
            "--status-socket",
            self.server_sock,
            *fec,
        )
        for i, host in enumerate(t.clients, start=1):
            sock = status_socket(host, "client")
            d = start_client(host, t.server, "--status-socket", sock, *fec)
            self.clients.append(_Client(i, host, d, sock, client_address(d)))
        for c in self.clients:
            wait_reachable(c.host, SERVER_IP, timeout=30)
        self.console.print(
            f"kcpvpn server and {self.n} client(s) connected"
            f"{' (--rapid-fec on both sides)' if self.rapid_fec else ''}: "
            + ", ".join(f"client{c.index} = {c.ip}" for c in self.clients)
        )
        self._start_traffic()
        self.started = time.monotonic()

    def _start_traffic(self) -> None:
        t = self.topo
        for c in self.clients:
            c.ping = c.host.popen(
                ["ping", "-n", "-i", f"{self.ping_interval:g}", SERVER_IP], name="ping"
            )
        if self.rate_mbit <= 0:
            return
        for c in self.clients:
            port = str(IPERF_PORT + c.index)
            t.server.popen(["iperf3", "-s", "-p", port, "-B", SERVER_IP], name=f"iperf3-s{c.index}")
        for c in self.clients:
            iperf.wait_listening(t.server, IPERF_PORT + c.index)
        for c in self.clients:
            port = str(IPERF_PORT + c.index)
            c.iperf = c.host.popen(
                [
                    "iperf3",
                    "-c",
                    SERVER_IP,
                    "-p",
                    port,
                    "-t",
                    "86400",  # until the demo ends (stopped by PID)
                    "-b",
                    f"{self.rate_mbit:g}M",
                    "-i",
                    "0",
                ],
                name="iperf3",
            )

    # --- figures ------------------------------------------------------------------------------
    def poll(self) -> None:
        """Reads every status socket once; new snapshots join the series."""
        now = time.monotonic()
        try:
            rows = sessions_of(read_status(self.server_sock))
            self.server_rows = {r.get("ip"): r for r in rows}
        except (OSError, ValueError):
            pass
        for c in self.clients:
            try:
                cs = sessions_of(read_status(c.sock))
            except (OSError, ValueError):
                cs = []
            if cs:
                c.doc = cs[0]
                c.mine.add(now, _figures(cs[0]))
            ss = self.server_rows.get(c.ip)
            if ss is not None:
                c.peer.add(now, _figures(ss))

    def table(self) -> Group:
        now = time.monotonic()
        t = Table(
            title=f"kcpvpn lab demo — {self.n} client(s), RTT {2 * self.delay_ms:g} ms, "
            f"{self.loss:.0%} loss each way, rapid FEC {'on' if self.rapid_fec else 'off'} "
            f"— {now - self.started:.0f} s",
            caption="ping: RTT an application sees through the tunnel (last 100 pings) · "
            "KCP RTT: the tunnel's smoothed RTT · loss: datagrams one end sent that the "
            "other never got, since the start · resent: KCP retransmissions · FEC fixed: "
            "datagrams rebuilt from parity · Mbit/s: payload through the tunnel, last second",
            caption_justify="left",
        )
        for col in (
            "client",
            "tunnel IP",
            "ping p50/p99 ms",
            "KCP RTT",
            "loss ↑/↓",
            "resent",
            "FEC fixed",
            "Mbit/s ↑/↓",
        ):
            t.add_column(col, justify="left" if col in ("client", "tunnel IP") else "right")
        for c in self.clients:
            c.read_pings()
            ss = self.server_rows.get(c.ip)
            if not c.doc or ss is None or c.mine.latest is None or c.peer.latest is None:
                state = "connecting" if c.daemon.alive() else "[red]client exited[/red]"
                t.add_row(f"client{c.index}", c.ip, state, *[""] * 5)
                continue
            s = c.doc
            # Both ends at one moment: the older of their latest snapshots.
            at = min(c.mine.latest, c.peer.latest)
            sent_up, got_up = c.mine.at(at, "datagrams_out"), c.peer.at(at, "datagrams_in")
            sent_dn, got_dn = c.peer.at(at, "datagrams_out"), c.mine.at(at, "datagrams_in")
            up = 1 - got_up / sent_up if sent_up else 0.0
            down = 1 - got_dn / sent_dn if sent_dn else 0.0
            last = c.mine.latest
            span = min(1.0, last - c.mine.points[0][0])
            rate_up = rate_dn = 0.0
            if span > 0:
                rate_up = (c.mine.at(last, "bytes_in") - c.mine.at(last - span, "bytes_in")) / span
                rate_dn = (
                    c.mine.at(last, "bytes_out") - c.mine.at(last - span, "bytes_out")
                ) / span
            rtts = list(c.rtts)
            ping = f"{percentile(rtts, 50):.1f} / {percentile(rtts, 99):.1f}" if rtts else "-"
            t.add_row(
                f"client{c.index}",
                c.ip,
                ping,
                f"{s['kcp']['srtt_ms']} ms",
                f"{_pct(max(0.0, up))} / {_pct(max(0.0, down))}",
                str(_kcp_resent(s) + _kcp_resent(ss)),
                str(s["fec_recovered"] + ss["fec_recovered"]),
                f"{8 * rate_up / 1e6:.2f} / {8 * rate_dn / 1e6:.2f}",
            )
        parts: list[Any] = [t]
        try:
            e = self.topo.emulator_stats()
            line = []
            for d in ("to_server", "to_client"):
                x = e[d]
                dropped = x["dropped_loss"] + x["dropped_burst"] + x["dropped_queue"]
                line.append(
                    f"{d.replace('_', ' ')}: {x['rx_frames']} frames, {dropped} dropped "
                    f"({_pct(dropped / x['rx_frames']) if x['rx_frames'] else '-'})"
                )
            parts.append(Text("emulator: " + " · ".join(line), style="dim"))
        except Exception as exc:  # the figures are a view: never stop the demo for them
            parts.append(Text(f"emulator: {exc}", style="red"))
        return Group(*parts)

    def problems(self) -> list[str]:
        out = []
        if self.server is not None and not self.server.alive():
            out.append(f"the server exited:\n{self.server.log()[-2000:]}")
        for c in self.clients:
            if not c.daemon.alive():
                out.append(f"client{c.index} exited:\n{c.daemon.log()[-2000:]}")
        return out

    # --- running ----------------------------------------------------------------------------
    def run(self, duration: float | None = None, refresh: float = 1.0) -> int:
        """Runs until Ctrl-C, or `duration` seconds; returns the exit status."""
        prefix = self.topo.prefix
        status = 0
        old_sigint = signal.getsignal(signal.SIGINT)
        try:
            with self.topo:
                try:
                    self.start()
                    status = self._show(duration, refresh)
                except KeyboardInterrupt:
                    # The normal way to stop: a clean run, its logs go too.
                    self.console.print("Ctrl-C: tearing down")
                finally:
                    # A second, impatient Ctrl-C must not cut the teardown short.
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
        except DaemonFailed as e:
            self.console.print(f"[red]{e}[/red]")
            status = 1
        finally:
            signal.signal(signal.SIGINT, old_sigint)
        left = [ns for ns in lab_namespaces() if ns.startswith(prefix + "-")]
        if left:
            self.console.print(f"[red]namespaces left behind: {' '.join(left)}[/red]")
            return 1
        self.console.print(
            f"torn down: daemons and traffic stopped, no namespace of {prefix} is left"
            + (f"; logs kept in {self.topo.run_dir}" if Path(self.topo.run_dir).exists() else "")
        )
        return status

    def _show(self, duration: float | None, refresh: float) -> int:
        end = None if duration is None else time.monotonic() + duration
        interactive = self.console.is_terminal
        if interactive:
            self.console.print("Ctrl-C stops the demo and removes everything.")
        last_print = 0.0
        live = (
            Live(self.table(), console=self.console, auto_refresh=False)
            if interactive
            else _NoLive()
        )
        with live:
            next_draw = time.monotonic() + refresh
            while end is None or time.monotonic() < end:
                self.poll()
                time.sleep(POLL)
                if time.monotonic() < next_draw:
                    continue
                next_draw += refresh
                view = self.table()
                if interactive:
                    live.update(view, refresh=True)
                elif time.monotonic() - last_print >= 2 * refresh:
                    # Not a terminal (CI, a pipe): a snapshot every other refresh.
                    self.console.print(view)
                    last_print = time.monotonic()
                bad = self.problems()
                if bad:
                    for p in bad:
                        self.console.print(f"[red]{p}[/red]")
                    return 1
        if not interactive:
            self.poll()
            self.console.print(self.table())
        return 0


class _NoLive:
    """Stands in for rich's Live when the output is not a terminal."""

    def __enter__(self) -> _NoLive:
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
