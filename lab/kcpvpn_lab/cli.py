"""`kcpvpn-lab`: the lab's command line, also `kcpvpn lab` (the entry point
`lab` of the group `kcpvpn.commands` in lab/pyproject.toml mounts `app` there).

kcpvpn-lab demo                                       # server + 2 clients, live figures
kcpvpn-lab up --clients 2 --delay-ms 20 --loss 0.05   # build, hold until Ctrl-C
kcpvpn-lab list                                       # the lab's namespaces
kcpvpn-lab clean                                      # remove leftovers of crashed runs
kcpvpn-lab bench-emulator                             # emulator throughput and rate accuracy
kcpvpn-lab bench [--quick]                            # kcpvpn vs no tunnel vs wireguard-go
kcpvpn-lab load --clients 1000                        # 1000 real sessions on one server
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
    context_settings={"help_option_names": ["-h", "--help"]},
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


@app.command()
def demo(
    clients: Annotated[int, typer.Option(help="number of client hosts (1..20)")] = 2,
    delay: Annotated[float, typer.Option(help="one-way delay in ms, each direction")] = 20.0,
    loss: Annotated[
        float, typer.Option(help="random loss each way, a fraction (0.05 = 5%)")
    ] = 0.05,
    duration: Annotated[
        float | None,
        typer.Option(
            help="run this many seconds, then tear down and exit 0 (default: until Ctrl-C)"
        ),
    ] = None,
    rapid_fec: Annotated[bool, typer.Option(help="start both daemons with --rapid-fec")] = True,
    rate: Annotated[
        float, typer.Option(help="iperf3 TCP flow per client in Mbit/s (0 = pings only)")
    ] = 4.0,
    seed: Annotated[int | None, typer.Option(help="emulator seed (random if unset)")] = None,
) -> None:
    """A server and clients over an emulated lossy link: real daemons, ping and iperf3
    traffic, live per-client figures; Ctrl-C tears everything down."""
    _need_root()
    if not 1 <= clients <= 20:
        console.print(f"[red]--clients {clients}: use 1..20[/red]")
        raise typer.Exit(2)
    if not 0 <= loss < 1:
        console.print(f"[red]--loss {loss}: a fraction in [0, 1), e.g. 0.05 for 5%[/red]")
        raise typer.Exit(2)
    if delay < 0 or (duration is not None and duration <= 0) or rate < 0:
        console.print("[red]--delay and --rate must be >= 0, --duration > 0[/red]")
        raise typer.Exit(2)
    import shutil

    missing = [
        t for t in ("ip", "ping", "ethtool") + (("iperf3",) if rate else ()) if not shutil.which(t)
    ]
    if missing:
        console.print(
            f"[red]missing tools: {' '.join(missing)}; run `make deps` (as root) "
            "or install them with apt-get[/red]"
        )
        raise typer.Exit(1)
    from .demo import Demo

    d = Demo(
        clients=clients,
        delay_ms=delay,
        loss=loss,
        rapid_fec=rapid_fec,
        rate_mbit=rate,
        seed=seed,
        console=console,
    )
    raise typer.Exit(d.run(duration=duration))


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


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="the short set: under 5 minutes")] = False,
    repeats: Annotated[
        int | None, typer.Option(help="runs per TCP figure (default 3, quick 1)")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="output folder (default bench-results/<UTC time>)")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="systems, comma-separated: none, kcpvpn, kcpvpn-bare, kcpvpn-no-rapid-fec, "
            "wireguard-go"
        ),
    ] = None,
) -> None:
    """kcpvpn against no tunnel and wireguard-go (clean link; 40 ms / 100 Mbit/s with
    0-20% loss): results.json, report.md and plots. More knobs: python -m kcpvpn_lab.bench -h."""
    _need_root()
    from .bench import main as bench_main

    argv = ["--quick"] if quick else []
    if repeats is not None:
        argv += ["--repeats", str(repeats)]
    if out is not None:
        argv += ["--out", out]
    if only is not None:
        argv += ["--only", only]
    raise typer.Exit(bench_main(argv))


@app.command()
def load(
    clients: Annotated[int, typer.Option(help="client sessions to run")] = 1000,
    per_source: Annotated[
        int, typer.Option(help="clients per source address (as behind one NAT address)")
    ] = 8,
    idle: Annotated[float, typer.Option(help="seconds of idle CPU measurement")] = 10.0,
    connect_timeout: Annotated[
        float, typer.Option(help="seconds the clients have to connect")
    ] = 60.0,
    sigterm: Annotated[
        bool, typer.Option(help="end by stopping the server with every client connected")
    ] = True,
    json_out: Annotated[
        str | None, typer.Option("--json", help="also write the figures to this file")
    ] = None,
) -> None:
    """N real client sessions (the product's client endpoint, real handshakes and sealed
    traffic) against one real server: connect time, pings answered, memory and CPU per
    idle session, goodbye and SIGTERM times. Exit 1 if any client fell short."""
    _need_root()
    import json

    from .load import MAX_LOAD_CLIENTS, run_load

    if not 1 <= clients <= MAX_LOAD_CLIENTS or per_source < 1 or idle <= 0:
        console.print(
            f"[red]--clients 1..{MAX_LOAD_CLIENTS}, --per-source >= 1 and --idle > 0[/red]"
        )
        raise typer.Exit(2)
    res = run_load(
        clients,
        per_source=per_source,
        idle_seconds=idle,
        connect_timeout=connect_timeout,
        sigterm=sigterm,
        say=console.print,
    )
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"clients": clients, "sources": res.sources, **res.figures}, f, indent=1)
    for p in res.problems:
        console.print(f"[red]{p}[/red]")
    raise typer.Exit(0 if res.ok else 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
