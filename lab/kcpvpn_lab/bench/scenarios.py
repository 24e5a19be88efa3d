"""What the bench runs: the scenarios, their parameters (full and --quick),
the plan of measurements and its expected duration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .systems import SYSTEMS, SystemSpec

# The lossy link, each direction: 20 ms delay (40 ms RTT), 100 Mbit/s, a queue
# of about one bandwidth-delay product (100 Mbit/s × 40 ms = 500 kB).
LOSSY_LINK = {"delay_ms": 20, "rate_mbit": 100, "queue_bytes": 500_000}
# Latency under load: the same path with a deep drop-tail queue (2.5 MB,
# 200 ms at 100 Mbit/s), as many home routers and VPS uplinks have.
LOAD_LINK = {"delay_ms": 20, "rate_mbit": 100, "queue_bytes": 2_500_000}
FULL_LOSSES = (0.0, 0.01, 0.05, 0.10, 0.20)
QUICK_LOSSES = (0.0, 0.05)

# Rough costs (s) for the duration estimate, measured on the 2-core machine.
SETUP_S = 4.0  # a topology and one pair of daemons
IPERF_OVERHEAD_S = 1.0  # iperf3 server start, connection set-up, stop
PING_OVERHEAD_S = 0.5


@dataclass
class Config:
    systems: tuple[str, ...] = tuple(SYSTEMS)
    scenarios: tuple[str, ...] = ("clean", "lossy", "load")
    repeats: int = 3
    # no tunnel on the lossy link is a reference line (no target uses it): fewer repeats
    reference_repeats: int = 1
    clean_seconds: float = 5.0
    clean_cases: tuple[tuple[int, bool], ...] = ((1, False), (1, True), (4, False), (4, True))
    lossy_seconds: float = 8.0  # measured, after the omitted warm-up: 10 s per run in all
    lossy_omit: float = 2.0
    losses: tuple[float, ...] = FULL_LOSSES
    ccs: tuple[str, ...] = ("cubic", "bbr")
    pings: int = 150
    ping_interval: float = 0.1
    settle_s: float = 1.0
    no_rapid_fec_tcp: bool = False  # TCP through kcpvpn --no-rapid-fec on the lossy link too
    kcpvpn_flags: tuple[str, ...] = ()  # appended to every kcpvpn system's flags
    # latency under load: a bulk upload (1 flow with each cc, then 4 cubic
    # flows) with pings every ping_interval over the same tunnel
    load_losses: tuple[float, ...] = (0.0, 0.05, 0.10)
    load_seconds: float = 15.0
    load_warmup: float = 3.0
    load_cases: tuple[tuple[str, int], ...] = (("cubic", 1), ("bbr", 1), ("cubic", 4))
    quick: bool = False

    def specs(self, scenario: str) -> list[SystemSpec]:
        return [SYSTEMS[n] for n in self.systems if scenario in SYSTEMS[n].scenarios]

    def lossy_tcp_repeats(self, spec: SystemSpec) -> int:
        if not spec.lossy_tcp and not (
            self.no_rapid_fec_tcp and spec.name == "kcpvpn-no-rapid-fec"
        ):
            return 0
        return min(self.repeats, self.reference_repeats) if spec.kind == "none" else self.repeats

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lossy_link"] = LOSSY_LINK
        d["load_link"] = LOAD_LINK
        return d


def full() -> Config:
    return Config()


def quick() -> Config:
    """Under 5 minutes: one stream each way on the clean link (kcpvpn defaults,
    wireguard-go, no tunnel), 0 and 5% loss with cubic and bbr, one repeat."""
    return Config(
        systems=("none", "kcpvpn", "kcpvpn-no-rapid-fec", "wireguard-go"),
        repeats=1,
        clean_seconds=5.0,
        clean_cases=((1, False), (1, True)),
        lossy_seconds=5.0,
        lossy_omit=2.0,
        losses=QUICK_LOSSES,
        pings=50,
        load_losses=(0.0, 0.05),
        load_seconds=10.0,
        load_cases=(("cubic", 1), ("cubic", 4)),
        quick=True,
    )


def impairment(loss: float, link: dict[str, Any] = LOSSY_LINK) -> dict[str, Any]:
    return {**link, "loss": loss} if loss else dict(link)


@dataclass
class Plan:
    """Counts of measurements and the expected duration."""

    clean_runs: int = 0
    lossy_tcp_runs: int = 0
    ping_runs: int = 0
    load_runs: int = 0
    setups: int = 0
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def plan(cfg: Config) -> Plan:
    p = Plan()
    if "clean" in cfg.scenarios:
        for spec in cfg.specs("clean"):
            n = cfg.repeats * len(cfg.clean_cases)
            p.clean_runs += n
            p.setups += 1
            p.seconds += SETUP_S + n * (cfg.clean_seconds + IPERF_OVERHEAD_S)
            p.lines.append(f"clean link, {spec.name}: {n} iperf3 runs of {cfg.clean_seconds:g} s")
    if "lossy" in cfg.scenarios:
        for spec in cfg.specs("lossy"):
            reps = cfg.lossy_tcp_repeats(spec)
            n_tcp = reps * len(cfg.ccs) * len(cfg.losses)
            run_s = cfg.lossy_seconds + cfg.lossy_omit + IPERF_OVERHEAD_S
            ping_s = cfg.pings * cfg.ping_interval + PING_OVERHEAD_S
            p.lossy_tcp_runs += n_tcp
            p.ping_runs += len(cfg.losses)
            p.setups += 1
            p.seconds += SETUP_S + n_tcp * run_s + len(cfg.losses) * (ping_s + cfg.settle_s)
            p.lines.append(
                f"lossy link, {spec.name}: {n_tcp} iperf3 runs of "
                f"{cfg.lossy_omit:g}+{cfg.lossy_seconds:g} s, {len(cfg.losses)}×{cfg.pings} pings"
            )
    if "load" in cfg.scenarios:
        for spec in cfg.specs("load"):
            n = len(cfg.load_losses) * len(cfg.load_cases)
            p.load_runs += n
            p.setups += 1
            p.seconds += SETUP_S + n * (cfg.load_seconds + cfg.load_warmup + IPERF_OVERHEAD_S)
            p.lines.append(
                f"loaded link, {spec.name}: {n} bulk uploads of {cfg.load_seconds:g} s "
                "with pings beside"
            )
    return p
