"""`make bench`: kcpvpn against no tunnel and wireguard-go in the same run.

    python -m kcpvpn_lab.bench [--quick] [--repeats N] [--out DIR] [--only SYSTEM,...]
    kcpvpn lab bench ...        (the same, as root)

Scenarios (docs/bench.md): a clean link (iperf3 TCP, 1 and 4 streams, both
directions, CPU seconds per GB of both daemons) and a 40 ms / 100 Mbit/s
emulated link with 0-20% random loss (TCP goodput with inner cubic and bbr,
sparse ping RTT percentiles and delivery, bytes on the wire per byte
delivered). Output: bench-results/<UTC time>/results.json, report.md (with
the targets checked) and PNG plots.

- `scenarios`: the configuration (full, quick), the plan and its duration.
- `systems`: no tunnel, kcpvpn flag sets, wireguard-go; set-up per topology.
- `wireguard`: wireguard-go in lab namespaces.
- `measure`: iperf3, CPU time, emulator counters, pings, spreads.
- `runner`: runs the plan, records every figure (failures too); `main`.
- `report`: report.md, the plots, the targets, the console summary.
"""

from .runner import main

__all__ = ["main"]
