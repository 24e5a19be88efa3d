"""How fast is the emulator, and how exact is its rate limit?

    sudo .venv/bin/python -m kcpvpn_lab.bench_emulator [--seconds 5]

Runs iperf3 UDP with 1400-byte IP packets (1372-byte payload) from a client
to the server through the emulator of a fresh topology and reports:

1. no impairment, unlimited offered load: frames per second and Gbit/s the
   emulator passed (its own counters) and what the receiver got;
2. no impairment, 1 Gbit/s offered: the loss (should be ~0);
3. rate 100 Mbit/s + 20 ms delay, 150 Mbit/s offered: the emulator's output
   rate measured from its counters, against the configured 100 Mbit/s.

A measurement, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from . import iperf
from .topology import Topology

PAYLOAD = 1372  # + 8 UDP + 20 IP = 1400-byte packets
IPERF_UDP = ["iperf3", "-u", "-l", str(PAYLOAD), "-w", "4M", "-c"]


def _iperf_udp(topo: Topology, rate: str, seconds: float) -> dict[str, Any]:
    server = topo.server.popen(["iperf3", "-s", "-1", "-J"], name="iperf3-s")
    try:
        iperf.wait_listening(topo.server)
        before = topo.emulator_stats()["to_server"]
        t0 = time.monotonic()
        r = topo.client(1).run(
            # -w: socket buffers big enough that the receiving iperf3 is not what drops.
            [*IPERF_UDP, str(topo.server.address), "-b", rate, "-t", str(seconds), "-J"],
            timeout=seconds + 30,
        )
        t1 = time.monotonic()
        after = topo.emulator_stats()["to_server"]
        server.wait(10)
    finally:
        server.stop()
    end = json.loads(r.stdout)["end"]["sum"]
    elapsed = t1 - t0
    frames = after["tx_frames"] - before["tx_frames"]
    sent_bps = end["bits_per_second"]
    lost = end.get("lost_percent", 0.0)
    return {
        "offered_gbit": sent_bps / 1e9,
        "received_gbit": sent_bps * (1 - lost / 100) / 1e9,
        "iperf_lost_percent": lost,
        "emulator_frames_per_s": frames / elapsed,
        "emulator_gbit": (after["tx_bytes"] - before["tx_bytes"]) * 8 / elapsed / 1e9,
        "emulator_ip_gbit_1400": frames * 1400 * 8 / elapsed / 1e9,
        "emulator_rx_oversize": after["rx_oversize"],
        "emulator_dropped": sum(after[k] for k in after if k.startswith("dropped_")),
    }


def _rate_accuracy(topo: Topology, seconds: float) -> dict[str, Any]:
    server = topo.server.popen(["iperf3", "-s", "-1", "-J"], name="iperf3-s")
    try:
        iperf.wait_listening(topo.server)
        client = topo.client(1).popen(
            [*IPERF_UDP, str(topo.server.address), "-b", "150M", "-t", str(seconds + 2)],
            name="iperf3-c",
        )
        time.sleep(1.0)  # past the start and the queue filling
        s0, t0 = topo.emulator_stats()["to_server"], time.monotonic()
        time.sleep(seconds)
        s1, t1 = topo.emulator_stats()["to_server"], time.monotonic()
        client.wait(seconds + 30)
        server.wait(10)
    finally:
        server.stop()
    bps = (s1["tx_bytes"] - s0["tx_bytes"]) * 8 / (t1 - t0)
    return {
        "configured_mbit": 100.0,
        "measured_mbit_frames": bps / 1e6,
        "error_percent": (bps / 100e6 - 1) * 100,
        "dropped_queue": s1["dropped_queue"],
        "delayed": s1["delayed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m kcpvpn_lab.bench_emulator", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with Topology(clients=1) as topo:
        results["unlimited"] = _iperf_udp(topo, "0", args.seconds)
        results["offered_1gbit"] = _iperf_udp(topo, "1G", args.seconds)
        topo.impair({"rate_mbit": 100, "delay_ms": 20, "queue_bytes": 512 * 1024})
        results["rate_100mbit_delay_20ms"] = _rate_accuracy(topo, args.seconds)
    print(json.dumps(results, indent=2))
    u = results["unlimited"]
    print(
        f"\nemulator, no impairment: {u['emulator_frames_per_s']:.0f} frames/s = "
        f"{u['emulator_ip_gbit_1400']:.2f} Gbit/s of 1400-byte packets "
        f"(receiver got {u['received_gbit']:.2f} Gbit/s)"
    )
    g = results["offered_1gbit"]
    print(
        f"1 Gbit/s offered: {g['received_gbit']:.3f} Gbit/s received, "
        f"{g['iperf_lost_percent']:.3f}% lost"
    )
    r = results["rate_100mbit_delay_20ms"]
    print(
        f"rate 100 Mbit/s + 20 ms: emulator output {r['measured_mbit_frames']:.2f} Mbit/s "
        f"({r['error_percent']:+.2f}%)"
    )


if __name__ == "__main__":
    main()
