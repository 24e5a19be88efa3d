"""Quick throughput check: iperf3 TCP through the tunnel between two
namespaces on a clean link, and the CPU seconds both daemons spend per GB.

    python -m kcpvpn_lab.bench_quick [--seconds 10] [--streams 1] [-- extra kcpvpn flags]

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os

from . import iperf
from .topology import Topology
from .vpn import start_client, start_server

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def run(seconds: int, streams: int, flags: list[str], reverse: bool) -> dict:
    server_flags = ["--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24"]
    # A plain kernel bridge between the hosts: the link itself costs nothing.
    with Topology(clients=1, wan=False) as topo:
        srv = start_server(topo.server, *server_flags, *flags)
        cli = start_client(topo.client(1), topo.server, *flags)
        iperf.serve(topo.server, "192.168.88.1")
        before = cpu_seconds(srv.pid) + cpu_seconds(cli.pid)
        args = ["iperf3", "-c", "192.168.88.1", "-t", str(seconds), "-P", str(streams), "-J"]
        if reverse:
            args.append("-R")
        r = topo.client(1).run(args, timeout=seconds + 30)
        cpu = cpu_seconds(srv.pid) + cpu_seconds(cli.pid) - before
        res = iperf.report(r.stdout)["end"]
        received = res["sum_received"]["bytes"]
        return {
            "flags": flags,
            "streams": streams,
            "reverse": reverse,
            "seconds": res["sum_received"]["seconds"],
            "mbit_s": res["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": res["sum_sent"].get("retransmits"),
            "daemon_cpu_s": cpu,
            "cpu_s_per_gb": cpu / (received / 1e9) if received else float("inf"),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--reverse", action="store_true", help="server → client")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("flags", nargs="*", help="extra kcpvpn flags for both daemons (after --)")
    a = ap.parse_args(argv)
    res = run(a.seconds, a.streams, a.flags, a.reverse)
    if a.json:
        print(json.dumps(res))
    else:
        print(
            f"kcpvpn {' '.join(a.flags) or '(defaults)'}: {res['mbit_s']:.0f} Mbit/s, "
            f"{res['streams']} stream(s) {'server→client' if a.reverse else 'client→server'}, "
            f"{res['daemon_cpu_s']:.1f} CPU-s in both daemons = "
            f"{res['cpu_s_per_gb']:.2f} CPU-s/GB, "
            f"TCP retransmits {res['retransmits']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
