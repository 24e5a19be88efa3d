"""One measurement each: iperf3 TCP through a tunnel (goodput, CPU of the
daemons, bytes on the emulated wire), sparse pings, and the statistics the
report uses."""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import iperf, probes
from ..topology import Host, Topology

TICK = os.sysconf("SC_CLK_TCK")
IPERF_PORT = 5201


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_total(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def iperf_tcp(
    client: Host,
    server: Host,
    server_ip: str,
    seconds: float,
    streams: int = 1,
    reverse: bool = False,
    cc: str | None = None,
    omit: float = 0,
    cpu_pids: Sequence[int] = (),
    topo: Topology | None = None,
) -> dict[str, Any]:
    """iperf3 TCP from `client` to `server_ip` (the server runs in `server`;
    -R: server → client). Goodput at the receiver over the measured seconds
    (the first `omit` seconds excluded); with `cpu_pids`, the CPU seconds those
    processes spent during the whole run per GB delivered in it; with `topo`,
    the bytes that entered its emulated link (both directions, frames the link
    dropped included) per byte delivered in the whole run."""
    srv = server.popen(
        ["iperf3", "-s", "-1", "-J", "-B", server_ip, "-p", str(IPERF_PORT)], name="iperf3-s"
    )
    argv = [
        "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
        "-P", str(streams), "-J", "--get-server-output", "--connect-timeout", "5000",
    ]  # fmt: skip
    if omit:
        argv += ["-O", f"{omit:g}"]
    if cc:
        argv += ["-C", cc]
    if reverse:
        argv.append("-R")
    sampler = None
    try:
        iperf.wait_listening(server, IPERF_PORT)
        emu0 = topo.emulator_stats() if topo is not None else None
        cpu0 = cpu_total(cpu_pids)
        t0 = time.monotonic()
        if topo is not None:
            sampler = WireSampler(topo, client if reverse else server, reverse)
            sampler.start()
        try:
            r = client.run(argv, check=False, timeout=seconds + omit + 40)
        finally:
            if sampler is not None:
                sampler.stop()
        wall = time.monotonic() - t0
        cpu = cpu_total(cpu_pids) - cpu0
        emu1 = topo.emulator_stats() if topo is not None else None
    finally:
        srv.stop(timeout=2)
    j = probes.iperf3_json(r)
    end = j["end"]
    received = end["sum_received"]
    res: dict[str, Any] = {
        "command": " ".join(argv),
        "mbit_s": received["bits_per_second"] / 1e6,
        "bytes": received["bytes"],
        "seconds": received["seconds"],
        "retransmits": end["sum_sent"].get("retransmits"),
        "sender_cc": end.get("sender_tcp_congestion"),
        "receiver_cc": end.get("receiver_tcp_congestion"),
        "wall_s": wall,
    }
    if cc and res["sender_cc"] not in (None, cc):
        raise RuntimeError(f"asked for -C {cc} but the sender used {res['sender_cc']}")
    # Everything the receiver got, the omitted warm-up included: the window
    # the CPU and wire counters cover.
    receiver = j["intervals"] if reverse else j.get("server_output_json", {}).get("intervals", [])
    total = sum(i["sum"]["bytes"] for i in receiver) or received["bytes"]
    res["delivered_bytes_total"] = total
    if cpu_pids:
        res["cpu_s"] = cpu
        res["cpu_s_per_gb"] = cpu / (total / 1e9) if total else None
    if emu0 is not None and emu1 is not None:
        delta = emulator_delta(emu0, emu1)
        res["emulator"] = delta
        wire = delta["to_server"]["rx_bytes"] + delta["to_client"]["rx_bytes"]
        res["wire_bytes_whole_run"] = wire
        res["wire_per_byte_whole_run"] = wire / total if total else None
        res["wire_per_byte"] = res["wire_per_byte_whole_run"]
        res["wire_method"] = "whole run"
        steady = sampler.ratio(t0 + omit + 0.5) if sampler is not None else None
        if steady is not None and steady[1]["received_bytes"] < MIN_WINDOW_BYTES:
            # A slow flow's window is skewed by its edges: when a retransmission
            # fills a hole, the receiver counts at once every byte queued behind
            # it, bytes that crossed the link before the window opened (seen:
            # 0.95 wire bytes per byte for plain TCP at 5% loss, 1 Mbit/s).
            res["wire_window_too_small"] = steady[1]
            steady = None
        if steady is not None:
            res["wire_per_byte"], res["wire_window"] = steady
            res["wire_method"] = "sampled window"
        elif sampler is not None:
            res["wire_sampler"] = {"samples": len(sampler.samples), "errors": sampler.errors[:5]}
    return res


# Below this many bytes received in the sampled window, the whole-run count
# is the better estimate (see `iperf_tcp`).
MIN_WINDOW_BYTES = 4 << 20


class WireSampler:
    """Samples, once a `period`, the bytes that entered the emulated link
    (both directions) and the TCP payload bytes the receiver has got
    (tcpi_bytes_received of its iperf3 sockets, from `ss`). The ratio over a
    window inside the measured seconds leaves out what a whole-run count
    gets wrong: the sender's socket buffer still crossing the link after the
    receiver stopped counting."""

    def __init__(self, topo: Topology, receiver: Host, reverse: bool, period: float = 0.5):
        self.topo = topo
        self.receiver = receiver
        # The receiver's end of the iperf3 connections: the server's sockets
        # have the iperf3 port as source port, the client's as destination.
        self.filter = f"{'dport' if reverse else 'sport'} = :{IPERF_PORT}"
        self.period = period
        self.samples: list[tuple[float, float, int]] = []  # (time, wire bytes, received)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _wire(self) -> int:
        s = self.topo.emulator_stats()
        return s["to_server"]["rx_bytes"] + s["to_client"]["rx_bytes"]

    def _received(self) -> int | None:
        r = self.receiver.run(
            ["ss", "-Htin", "state", "established", f"( {self.filter} )"], check=False, timeout=5
        )
        found = [int(m) for m in re.findall(r"bytes_received:(\d+)", r.stdout)]
        return sum(found) if found else None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                w0 = self._wire()
                got = self._received()
                w1 = self._wire()
            except Exception as e:  # a missed sample only narrows the window
                self.errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            if got is not None:
                # The two emulator reads bracket the ss call: take their middle.
                self.samples.append((time.monotonic(), (w0 + w1) / 2, got))

    def ratio(self, after: float) -> tuple[float, dict] | None:
        """(wire bytes per received byte, the window) between the first sample
        after `after` and the last one; None with too few samples."""
        pts = [s for s in self.samples if s[0] >= after]
        if len(pts) < 3:
            return None
        (t0, w0, r0), (t1, w1, r1) = pts[0], pts[-1]
        if r1 <= r0:
            return None
        return (w1 - w0) / (r1 - r0), {
            "seconds": round(t1 - t0, 2),
            "wire_bytes": round(w1 - w0),
            "received_bytes": r1 - r0,
            "samples": len(pts),
        }


COUNTERS = (
    "rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "dropped_loss", "dropped_burst",
    "dropped_queue", "dropped_limit", "duplicated",
)  # fmt: skip


def emulator_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {
        d: {k: after[d].get(k, 0) - before[d].get(k, 0) for k in COUNTERS}
        for d in ("to_server", "to_client")
    }


def sparse_ping(client: Host, ip: str, count: int, interval: float = 0.1) -> dict[str, Any]:
    """`count` pings `interval` s apart: delivery and RTT percentiles."""
    r = probes.ping(client, ip, count=count, interval=interval, wait=3)
    res: dict[str, Any] = {
        "command": f"ping -n -c {count} -i {interval:.3f} -s 56 -W 3 {ip}",
        "sent": r.sent,
        "received": r.received,
        "delivery": r.received / r.sent if r.sent else 0.0,
        "rtts_ms": r.rtts_ms,
    }
    if r.rtts_ms:
        res.update(
            p50=r.p(50),
            p90=r.p(90),
            p99=r.p(99),
            max=max(r.rtts_ms),
            mean=statistics.fmean(r.rtts_ms),
        )
    else:
        res.update(p50=None, p90=None, p99=None, max=None, mean=None)
        res["output"] = r.output[-500:]
    return res


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index of the shares: 1.0 when all are equal, 1/n when
    one takes everything."""
    if not values or not any(values):
        return None
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def queue_wait_percentile(
    hist: Sequence[int], bounds_ms: Sequence[float], p: float
) -> float | None:
    """The p-th percentile of a bottleneck's queue waits, read from the
    emulator's histogram as the upper bound of the bucket it falls in (the
    overflow bucket: twice the highest bound); None without samples."""
    total = sum(hist)
    if not total:
        return None
    upper = [float(b) for b in bounds_ms] + [2.0 * bounds_ms[-1]]
    need, seen = total * p / 100.0, 0
    for n, bound in zip(hist, upper, strict=True):
        seen += n
        if seen >= need:
            return bound
    return upper[-1]


def ping_under_load(
    client: Host,
    server: Host,
    server_ip: str,
    seconds: float,
    cc: str,
    streams: int = 1,
    warmup: float = 3.0,
    ping_interval: float = 0.1,
    topo: Topology | None = None,
) -> dict[str, Any]:
    """A bulk iperf3 TCP upload (`streams` flows, `cc`) from `client` to
    `server_ip` for `seconds`, and pings every `ping_interval` s over the
    same path once the upload has had `warmup` s to fill the queues: ping
    delivery and RTT percentiles while loaded, the upload's goodput over the
    same seconds and, with several flows, Jain's index of their goodputs.
    With `topo` (an emulated link), also how long frames waited in the
    upload's bottleneck queue while the pings ran: what the tunnel's pacing
    left standing where its scheduler cannot reorder it."""
    srv = server.popen(
        ["iperf3", "-s", "-1", "-J", "-B", server_ip, "-p", str(IPERF_PORT)], name="iperf3-s"
    )
    argv = [
        "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
        "-P", str(streams), "-J", "-C", cc, "-O", f"{warmup:g}", "--connect-timeout", "5000",
    ]  # fmt: skip
    try:
        iperf.wait_listening(server, IPERF_PORT)
        bulk = client.popen(argv, name="iperf3-c")
        try:
            time.sleep(warmup)
            count = max(1, int((seconds - 1.0) / ping_interval))
            emu0 = topo.emulator_stats()["to_server"] if topo is not None else None
            pings = sparse_ping(client, server_ip, count, ping_interval)
            emu1 = topo.emulator_stats()["to_server"] if topo is not None else None
            bulk.wait(timeout=seconds + warmup + 40)
        finally:
            bulk.stop(timeout=2)
        out = bulk.log_path.read_text()
    finally:
        srv.stop(timeout=2)
    j = iperf.report(out)
    per_flow = [s["receiver"]["bits_per_second"] / 1e6 for s in j["end"].get("streams", [])]
    res: dict[str, Any] = {
        "command": " ".join(argv),
        "ping_command": pings.pop("command"),
        **{f"ping_{k}": v for k, v in pings.items()},
        "mbit_s": j["end"]["sum_received"]["bits_per_second"] / 1e6,
        "flows_mbit_s": per_flow,
        "jain": jain(per_flow) if len(per_flow) > 1 else None,
        "sender_cc": j["end"].get("sender_tcp_congestion"),
    }
    if emu0 is not None and emu1 is not None and "queue_wait" in emu1:
        hist = [b - a for a, b in zip(emu0["queue_wait"], emu1["queue_wait"], strict=True)]
        bounds = emu1["queue_wait_bounds_ms"]
        res["bottleneck_wait_hist"] = hist
        res["bottleneck_wait_p50"] = queue_wait_percentile(hist, bounds, 50)
        res["bottleneck_wait_p99"] = queue_wait_percentile(hist, bounds, 99)
    if res["sender_cc"] not in (None, cc):
        raise RuntimeError(f"asked for -C {cc} but the sender used {res['sender_cc']}")
    return res


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """median, min, max and count of the values that exist (None when none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
