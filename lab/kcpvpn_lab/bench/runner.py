"""Runs the plan: one topology and one pair of daemons per system and
scenario; every measurement is recorded, failed ones with their error, and
results.json is rewritten after each so an interrupted run keeps its figures."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..topology import Topology
from . import measure, report, scenarios, wireguard
from .systems import SYSTEMS, SystemSpec, Tunnel, set_up


def _out(argv: list[str], timeout: float = 10) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    here = Path(__file__).resolve().parent
    commit = _out(["git", "-C", str(here), "rev-parse", "HEAD"])
    dirty = _out(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"])
    kcpvpn = shutil.which("kcpvpn", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return {
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "python": platform.python_version(),
        "kcpvpn": _out([kcpvpn, "--version"]) if kcpvpn else None,
        "wireguard_go": wireguard.version(),
        "iperf3": (_out(["iperf3", "--version"]) or "").splitlines()[0:1],
        "tcp_congestion_available": _read("/proc/sys/net/ipv4/tcp_available_congestion_control"),
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def load_bbr() -> None:
    if "bbr" not in (_read("/proc/sys/net/ipv4/tcp_available_congestion_control") or ""):
        _out(["modprobe", "tcp_bbr"])  # failure is fine: iperf3 -C bbr then reports it


class Bench:
    def __init__(self, cfg: scenarios.Config, out: Path, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.out = out
        self.log = log
        self.t0 = time.monotonic()
        self.done = 0
        self.plan = scenarios.plan(cfg)
        self.results: dict[str, Any] = {
            "meta": {
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "argv": sys.argv,
                "config": cfg.as_dict(),
                "estimated_s": round(self.plan.seconds),
                "plan": self.plan.lines,
                "machine": machine_info(),
            },
            "systems": {n: SYSTEMS[n].as_dict() for n in cfg.systems},
            "skipped": {},
            "clean": [],
            "lossy_tcp": [],
            "lossy_ping": [],
            "load": [],
        }

    # --- bookkeeping -------------------------------------------------------------------
    def total(self) -> int:
        p = self.plan
        return p.clean_runs + p.lossy_tcp_runs + p.ping_runs + p.load_runs

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1))
        os.replace(tmp, self.out / "results.json")

    def record(self, kind: str, row: dict[str, Any], what: str) -> None:
        self.results[kind].append(row)
        self.done += 1
        el = time.monotonic() - self.t0
        self.log(f"[{self.done}/{self.total()} {el / 60:4.1f} min] {what}: {_brief(kind, row)}")
        self.save()

    def measure(self, kind: str, base: dict, what: str, fn: Callable[[], dict]) -> None:
        t = time.monotonic()
        try:
            row = {**base, "ok": True, **fn()}
        except Exception as e:  # a failed run is a result, not the end of the bench
            row = {**base, "ok": False, "error": f"{type(e).__name__}: {e}"[-1500:]}
        row["elapsed_s"] = round(time.monotonic() - t, 2)
        self.record(kind, row, what)

    def fail_all(self, kind: str, bases: list[dict], error: str, what: str) -> None:
        for b in bases:
            self.record(kind, {**b, "ok": False, "error": error}, what)

    # --- scenarios -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.log(
            f"bench plan ({'quick' if self.cfg.quick else 'full'}): "
            f"expected {self.plan.seconds / 60:.1f} min, output in {self.out}"
        )
        for line in self.plan.lines:
            self.log(f"  {line}")
        self.save()
        if "wireguard-go" in self.cfg.systems:
            why = wireguard.ensure_installed(self.log)
            if why:
                self.log(f"wireguard-go skipped: {why}")
                self.results["skipped"]["wireguard-go"] = why
        if ("lossy" in self.cfg.scenarios and "bbr" in self.cfg.ccs) or (
            "load" in self.cfg.scenarios and any(cc == "bbr" for cc, _ in self.cfg.load_cases)
        ):
            load_bbr()
        try:
            if "clean" in self.cfg.scenarios:
                for spec in self.cfg.specs("clean"):
                    self._system("clean", spec)
            if "lossy" in self.cfg.scenarios:
                for spec in self.cfg.specs("lossy"):
                    self._system("lossy", spec)
            if "load" in self.cfg.scenarios:
                for spec in self.cfg.specs("load"):
                    self._system("load", spec)
        finally:
            meta = self.results["meta"]
            meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            meta["duration_s"] = round(time.monotonic() - self.t0, 1)
            self.save()
        return self.results

    def _bases(self, scenario: str, spec: SystemSpec) -> dict[str, list[dict]]:
        cfg = self.cfg
        if scenario == "clean":
            return {
                "clean": [
                    {"system": spec.name, "streams": s, "reverse": r, "repeat": i}
                    for i in range(cfg.repeats)
                    for s, r in cfg.clean_cases
                ]
            }
        if scenario == "load":
            return {
                "load": [
                    {"system": spec.name, "loss": loss, "cc": cc, "streams": n}
                    for loss in cfg.load_losses
                    for cc, n in cfg.load_cases
                ]
            }
        reps = cfg.lossy_tcp_repeats(spec)
        return {
            "lossy_tcp": [
                {"system": spec.name, "loss": loss, "cc": cc, "repeat": i}
                for loss in cfg.losses
                for i in range(reps)
                for cc in cfg.ccs
            ],
            "lossy_ping": [{"system": spec.name, "loss": loss} for loss in cfg.losses],
        }

    def _system(self, scenario: str, spec: SystemSpec) -> None:
        bases = self._bases(scenario, spec)
        skipped = self.results["skipped"].get(spec.name)
        if skipped:
            for kind, rows in bases.items():
                self.fail_all(kind, rows, f"skipped: {skipped}", f"{scenario} {spec.name}")
            return
        if scenario == "clean":
            topo = Topology(clients=1, wan=False)
        elif scenario == "load":
            topo = Topology(clients=1, impair=scenarios.impairment(0.0, scenarios.LOAD_LINK))
        else:
            topo = Topology(clients=1, impair=scenarios.impairment(self.cfg.losses[0]))
        try:
            with topo:
                tun = self._set_up(spec, topo)
                if tun is None:
                    for kind, rows in bases.items():
                        self.fail_all(kind, rows, self._setup_error, f"{scenario} {spec.name}")
                    return
                try:
                    self.results["systems"][spec.name].setdefault("commands", {})[scenario] = (
                        tun.commands
                    )
                    if scenario == "clean":
                        self._clean(spec, topo, tun, bases["clean"])
                    elif scenario == "load":
                        self._load(spec, topo, tun, bases["load"])
                    else:
                        self._lossy(spec, topo, tun, bases)
                finally:
                    tun.close()
        except Exception as e:  # e.g. the topology could not be built or torn down
            error = f"{type(e).__name__}: {e}"
            self.log(f"{scenario} {spec.name}: {error}")
            for kind, rows in bases.items():
                recorded = {_key(r) for r in self.results[kind]}
                left = [r for r in rows if _key(r) not in recorded]
                self.fail_all(kind, left, error, f"{scenario} {spec.name}")

    _setup_error = ""

    def _set_up(self, spec: SystemSpec, topo: Topology) -> Tunnel | None:
        try:
            return set_up(spec, topo, self.cfg.kcpvpn_flags)
        except Exception as e:
            self._setup_error = f"set-up failed: {type(e).__name__}: {e}"[-2000:]
            self.log(f"{spec.name}: {self._setup_error}")
            return None

    def _ensure(self, spec: SystemSpec, topo: Topology, tun: Tunnel) -> Tunnel:
        """The tunnel, restarted once if its daemons died (e.g. a crash)."""
        if tun.alive():
            return tun
        self.log(f"{spec.name}: a daemon exited; restarting it. Logs:\n{tun.logs(600)}")
        tun.close()
        new = self._set_up(spec, topo)
        if new is None:
            raise RuntimeError(f"{spec.name} died and could not restart: {self._setup_error}")
        return new

    def _clean(self, spec: SystemSpec, topo: Topology, tun: Tunnel, bases: list[dict]) -> None:
        cfg = self.cfg
        for base in bases:
            tun = self._ensure(spec, topo, tun)
            way = "server→client" if base["reverse"] else "client→server"
            what = f"clean {spec.name} -P {base['streams']} {way}"
            t = tun
            self.measure(
                "clean",
                base,
                what,
                lambda t=t, b=base: measure.iperf_tcp(
                    t.client,
                    t.server,
                    t.server_ip,
                    cfg.clean_seconds,
                    streams=b["streams"],
                    reverse=b["reverse"],
                    cpu_pids=t.pids,
                ),  # fmt: skip
            )

    def _lossy(self, spec: SystemSpec, topo: Topology, tun: Tunnel, bases: dict) -> None:
        cfg = self.cfg
        for loss in cfg.losses:
            topo.impair(scenarios.impairment(loss))
            time.sleep(cfg.settle_s)  # queues drain, the tunnel sees the new link
            for base in [b for b in bases["lossy_tcp"] if b["loss"] == loss]:
                tun = self._ensure(spec, topo, tun)
                t = tun
                self.measure(
                    "lossy_tcp",
                    base,
                    f"lossy {spec.name} loss {loss:.0%} {base['cc']} #{base['repeat'] + 1}",
                    lambda t=t, b=base: measure.iperf_tcp(
                        t.client,
                        t.server,
                        t.server_ip,
                        cfg.lossy_seconds,
                        cc=b["cc"],
                        omit=cfg.lossy_omit,
                        cpu_pids=t.pids,
                        topo=topo,
                    ),  # fmt: skip
                )
            tun = self._ensure(spec, topo, tun)
            time.sleep(0.5)  # pings alone: let the last TCP run's queue drain
            t = tun
            self.measure(
                "lossy_ping",
                {"system": spec.name, "loss": loss},
                f"lossy {spec.name} loss {loss:.0%} pings",
                lambda t=t: measure.sparse_ping(
                    t.client, t.server_ip, cfg.pings, cfg.ping_interval
                ),
            )

    def _load(self, spec: SystemSpec, topo: Topology, tun: Tunnel, bases: list[dict]) -> None:
        cfg = self.cfg
        for base in bases:
            topo.impair(scenarios.impairment(base["loss"], scenarios.LOAD_LINK))
            time.sleep(cfg.settle_s)  # the last run's queue drains
            tun = self._ensure(spec, topo, tun)
            t = tun
            flows = f"{base['streams']}×{base['cc']}"
            self.measure(
                "load",
                base,
                f"loaded {spec.name} loss {base['loss']:.0%} {flows} + pings",
                lambda t=t, b=base: measure.ping_under_load(
                    t.client,
                    t.server,
                    t.server_ip,
                    cfg.load_seconds,
                    b["cc"],
                    streams=b["streams"],
                    warmup=cfg.load_warmup,
                    ping_interval=cfg.ping_interval,
                    topo=topo,
                ),  # fmt: skip
            )


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("system", "loss", "cc", "streams", "reverse", "repeat"))


def _brief(kind: str, row: dict) -> str:
    if not row.get("ok"):
        return f"FAILED {row.get('error', '')[:200]}"
    if kind == "lossy_ping":
        if row.get("p50") is None:
            return f"0/{row['sent']} pings answered"
        return (
            f"{row['received']}/{row['sent']} delivered, p50 {row['p50']:.1f} "
            f"p99 {row['p99']:.1f} max {row['max']:.1f} ms"
        )
    if kind == "load":
        s = (
            f"{row['mbit_s']:.1f} Mbit/s, pings {row['ping_received']}/{row['ping_sent']} "
            f"p50 {row['ping_p50'] or 0:.1f} p99 {row['ping_p99'] or 0:.1f} ms"
        )
        return s + (f", Jain {row['jain']:.3f}" if row.get("jain") is not None else "")
    s = f"{row['mbit_s']:.1f} Mbit/s, retransmits {row.get('retransmits')}"
    if row.get("cpu_s_per_gb") is not None:
        s += f", {row['cpu_s_per_gb']:.2f} CPU-s/GB"
    if row.get("wire_per_byte") is not None:
        s += f", wire/delivered {row['wire_per_byte']:.3f}"
    return s


# --- command line --------------------------------------------------------------------------


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def _names(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _load_cases(text: str) -> tuple[tuple[str, int], ...]:
    cases = []
    for item in text.split(","):
        cc, _, n = item.strip().partition(":")
        if not cc or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r}: write cc:flows with flows >= 1, e.g. cubic:1,cubic:4"
            )
        cases.append((cc, int(n)))
    return tuple(cases)


def parse_args(argv: list[str] | None = None) -> tuple[scenarios.Config, Path]:
    ap = argparse.ArgumentParser(
        prog="python -m kcpvpn_lab.bench",
        description="kcpvpn against no tunnel and wireguard-go: a clean link and a "
        "40 ms / 100 Mbit/s link with 0-20%% loss. Writes results.json, report.md and PNGs.",
    )
    ap.add_argument("--quick", action="store_true", help="the short set (under 5 minutes)")
    ap.add_argument("--repeats", type=int, help="runs per TCP figure (default 3, quick 1)")
    ap.add_argument("--out", type=Path, help="output folder (default bench-results/<UTC time>)")
    ap.add_argument(
        "--only", type=_names, help=f"systems, comma-separated, of: {', '.join(SYSTEMS)}"
    )
    ap.add_argument("--scenarios", type=_names, help="clean,lossy,load (default all)")
    ap.add_argument("--clean-seconds", type=float, help="iperf3 -t on the clean link")
    ap.add_argument("--lossy-seconds", type=float, help="iperf3 -t on the lossy link (after -O)")
    ap.add_argument("--omit", type=float, help="iperf3 -O on the lossy link (warm-up seconds)")
    ap.add_argument("--losses", type=_floats, help="loss fractions, e.g. 0,0.05,0.1")
    ap.add_argument("--ccs", type=_names, help="inner TCP congestion controls, e.g. cubic,bbr")
    ap.add_argument("--streams", type=lambda s: tuple(int(x) for x in s.split(",")),
                    help="clean link: iperf3 -P values, e.g. 1,4")  # fmt: skip
    ap.add_argument(
        "--directions", type=_names, help="clean link: up (client→server), down (-R), or both"
    )
    ap.add_argument("--load-losses", type=_floats, help="loaded link: loss fractions")
    ap.add_argument("--load-seconds", type=float, help="loaded link: seconds per bulk upload")
    ap.add_argument(
        "--load-cases",
        type=_load_cases,
        help="loaded link: cc:flows pairs, e.g. cubic:1,bbr:1,cubic:4",
    )
    ap.add_argument("--pings", type=int, help="sparse pings per loss level (default 150, quick 50)")
    ap.add_argument("--reference-repeats", type=int, help="repeats of no tunnel on the lossy link")
    ap.add_argument(
        "--no-rapid-fec-tcp", action="store_true", help="TCP through --no-rapid-fec too"
    )
    ap.add_argument(
        "--kcpvpn-flags",
        default="",
        help="extra flags for every kcpvpn daemon, with '=': --kcpvpn-flags='--sndwnd 2048'",
    )
    a = ap.parse_args(argv)
    cfg = scenarios.quick() if a.quick else scenarios.full()
    if a.only:
        unknown = [n for n in a.only if n not in SYSTEMS]
        if unknown:
            ap.error(f"--only: unknown {', '.join(unknown)}; systems: {', '.join(SYSTEMS)}")
        cfg.systems = a.only
    if a.scenarios:
        bad = [s for s in a.scenarios if s not in ("clean", "lossy", "load")]
        if bad:
            ap.error(f"--scenarios: unknown {', '.join(bad)}; use clean, lossy, load")
        cfg.scenarios = a.scenarios
    for attr, val in (
        ("repeats", a.repeats), ("clean_seconds", a.clean_seconds),
        ("lossy_seconds", a.lossy_seconds), ("lossy_omit", a.omit), ("losses", a.losses),
        ("ccs", a.ccs), ("pings", a.pings), ("reference_repeats", a.reference_repeats),
        ("load_losses", a.load_losses), ("load_seconds", a.load_seconds),
        ("load_cases", a.load_cases),
    ):  # fmt: skip
        if val is not None:
            setattr(cfg, attr, val)
    if a.streams or a.directions:
        streams = a.streams or tuple(sorted({s for s, _ in cfg.clean_cases}))
        dirs = a.directions or ("up", "down")
        if any(d not in ("up", "down") for d in dirs):
            ap.error("--directions: use up, down or up,down")
        cfg.clean_cases = tuple((s, d == "down") for s in streams for d in dirs)
    if cfg.repeats < 1 or cfg.pings < 1 or cfg.clean_seconds <= 0 or cfg.lossy_seconds <= 0:
        ap.error("--repeats and --pings must be >= 1, the seconds > 0")
    if any(not 0 <= x < 1 for x in cfg.losses):
        ap.error("--losses: fractions in [0, 1), e.g. 0,0.05")
    cfg.no_rapid_fec_tcp = a.no_rapid_fec_tcp
    cfg.kcpvpn_flags = tuple(a.kcpvpn_flags.split())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return cfg, a.out or Path("bench-results") / stamp


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    if os.geteuid() != 0:
        print("the bench needs root (network namespaces): run it with sudo", file=sys.stderr)
        return 1
    missing = [t for t in ("ip", "iperf3", "ping", "ss", "ethtool") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {' '.join(missing)}; run `make deps` as root", file=sys.stderr)
        return 1
    bench = Bench(cfg, out)
    interrupted = False
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: writing the report of what was measured", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        interrupted = True
    res = bench.results
    res["meta"]["interrupted"] = interrupted
    bench.save()
    path = report.write(res, out)
    report.print_summary(res, path)
    return 1 if interrupted else 0
