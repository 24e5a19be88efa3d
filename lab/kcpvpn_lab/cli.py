"""`kcpvpn-lab`: the lab's command line (also mountable as `kcpvpn lab`).

kcpvpn-lab up --clients 2 --delay-ms 20 --loss 0.05   # build, hold until Ctrl-C
kcpvpn-lab list                                       # the lab's namespaces
kcpvpn-lab clean                                      # remove leftovers of crashed runs
kcpvpn-lab bench-emulator                             # emulator throughput and rate accuracy
"""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="kcpvpn's lab: namespaces, an emulated bad link, probes.",
)
console = Console()


def _need_root() -> None:
    if os.geteuid() != 0:
        console.print("[red]the lab needs root (network namespaces): run it with sudo[/red]")
        raise typer.Exit(1)


@app.command()
def clean(
    force: Annotated[
        bool, typer.Option(help="also remove namespaces of runs that are still alive")
    ] = False,
) -> None:
    """Remove what crashed lab runs left: namespaces named `kvl*`, their processes, run dirs."""
    _need_root()
    from .topology import clean as do_clean

    removed = do_clean(force=force)
    if removed:
        console.print(f"removed {len(removed)} namespace(s): {' '.join(removed)}")
    else:
        console.print("nothing to clean")


@app.command("list")
def list_() -> None:
    """The lab's namespaces and whether the run that made them is alive."""
    from .topology import PREFIX, _owner_alive, lab_namespaces

    table = Table("namespace", "run", "owner")
    for ns in lab_namespaces():
        run_id = ns[len(PREFIX) :].split("-", 1)[0]
        table.add_row(
            ns,
            run_id,
            "alive" if _owner_alive(run_id) else "[yellow]gone (lab clean removes it)[/yellow]",
        )
    console.print(table)


@app.command()
def up(
    clients: Annotated[int, typer.Option(help="number of client hosts")] = 1,
    delay_ms: Annotated[float, typer.Option(help="one-way delay, each direction")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="± jitter, each direction")] = 0.0,
    loss: Annotated[float, typer.Option(help="random loss fraction each way (0.05 = 5%)")] = 0.0,
    rate_mbit: Annotated[float, typer.Option(help="rate limit each way, 0 = none")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="emulator seed (random if unset)")] = None,
    interval: Annotated[float, typer.Option(help="seconds between counter updates")] = 2.0,
) -> None:
    """Build a topology (server, clients, emulated wan) and keep it until Ctrl-C."""
    _need_root()
    from .topology import Topology

    impair = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss, "rate_mbit": rate_mbit}
    with Topology(clients=clients, impair=impair, seed=seed) as t:
        table = Table("host", "namespace", "address", title=f"lab {t.prefix} (seed {t.seed})")
        for h in t.hosts.values():
            table.add_row(h.name, h.ns, str(h.address or "-"))
        console.print(table)
        console.print(
            f"shell in a host: [bold]ip netns exec {t.client(1).ns} bash[/bold]; "
            "Ctrl-C tears everything down"
        )
        try:
            while True:
                time.sleep(interval)
                s = t.emulator_stats()
                parts = []
                for d in ("to_server", "to_client"):
                    c = s[d]
                    drops = (
                        c["dropped_loss"]
                        + c["dropped_burst"]
                        + c["dropped_queue"]
                        + c["dropped_limit"]
                    )
                    parts.append(
                        f"{d}: passed {c['tx_frames']} dropped {drops} queued {c['queued']}"
                    )
                console.print(" | ".join(parts))
        except KeyboardInterrupt:
            console.print("tearing down")


@app.command("bench-emulator")
def bench_emulator(
    seconds: Annotated[float, typer.Option(help="length of each measurement")] = 5.0,
) -> None:
    """Emulator throughput (1400-byte packets) and rate accuracy (100 Mbit/s + 20 ms)."""
    _need_root()
    import sys

    from . import bench_emulator as b

    sys.argv = ["bench_emulator", "--seconds", str(seconds)]
    b.main()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
