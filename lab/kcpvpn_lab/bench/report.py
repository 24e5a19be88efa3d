"""From results.json to report.md, the PNG plots and the console summary:
medians and spreads per scenario and system, and the targets checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import spread

SYSTEM_ORDER = (
    "none", "kcpvpn", "kcpvpn-bare", "kcpvpn-no-rapid-fec", "kcpvpn-fifo", "wireguard-go",
)  # fmt: skip
COLOURS = {
    "none": "grey",
    "kcpvpn": "tab:blue",
    "kcpvpn-bare": "tab:cyan",
    "kcpvpn-no-rapid-fec": "tab:green",
    "kcpvpn-fifo": "tab:purple",
    "wireguard-go": "tab:red",
}
PLOTS = {
    "goodput": "goodput_vs_loss_{cc}.png",
    "ping": "ping_rtt_vs_loss.png",
    "cpu": "cpu_per_gb_clean.png",
    "wire": "wire_bytes_vs_loss.png",
}


def _lk(loss: float) -> str:
    return f"{loss:g}"


def _case(streams: int, reverse: bool) -> str:
    return f"{streams} stream{'s' if streams > 1 else ''} {'down' if reverse else 'up'}"


def _systems(res: dict, rows: list[dict]) -> list[str]:
    present = {r["system"] for r in rows}
    return [s for s in SYSTEM_ORDER if s in present] + sorted(present - set(SYSTEM_ORDER))


# --- aggregation -------------------------------------------------------------------------------


def summarize(res: dict) -> dict[str, Any]:
    """Medians and spreads: clean[system][case], lossy_tcp[system][cc][loss],
    lossy_ping[system][loss] (one ping run per loss)."""
    clean: dict[str, dict] = {}
    for r in res.get("clean", []):
        g = clean.setdefault(r["system"], {}).setdefault(
            _case(r["streams"], r["reverse"]),
            {"streams": r["streams"], "reverse": r["reverse"], "rows": []},
        )
        g["rows"].append(r)
    for cases in clean.values():
        for g in cases.values():
            rows = g.pop("rows")
            ok = [r for r in rows if r.get("ok")]
            g["failed"] = len(rows) - len(ok)
            g["mbit_s"] = spread([r["mbit_s"] for r in ok])
            g["cpu_s_per_gb"] = spread([r.get("cpu_s_per_gb") for r in ok])
            g["retransmits"] = spread([r.get("retransmits") for r in ok])
            g["ok_runs"] = len(ok)

    tcp: dict[str, dict] = {}
    for r in res.get("lossy_tcp", []):
        g = (
            tcp.setdefault(r["system"], {})
            .setdefault(r["cc"], {})
            .setdefault(_lk(r["loss"]), {"loss": r["loss"], "rows": []})
        )
        g["rows"].append(r)
    for ccs in tcp.values():
        for losses in ccs.values():
            for g in losses.values():
                rows = g.pop("rows")
                ok = [r for r in rows if r.get("ok")]
                g["failed"] = len(rows) - len(ok)
                g["ok_runs"] = len(ok)
                g["mbit_s"] = spread([r["mbit_s"] for r in ok])
                g["wire_per_byte"] = spread([r.get("wire_per_byte") for r in ok])
                g["retransmits"] = spread([r.get("retransmits") for r in ok])

    ping: dict[str, dict] = {}
    for r in res.get("lossy_ping", []):
        keep = {k: r.get(k) for k in ("loss", "ok", "sent", "received", "delivery", "p50",
                                      "p90", "p99", "max", "error")}  # fmt: skip
        ping.setdefault(r["system"], {})[_lk(r["loss"])] = keep
    # one run per system, loss and case: no spread
    load: dict[str, dict] = {}
    for r in res.get("load", []):
        keep = {k: r.get(k) for k in ("loss", "cc", "streams", "ok", "mbit_s", "jain", "error",
                                      "ping_sent", "ping_received", "ping_p50", "ping_p99",
                                      "ping_max", "bottleneck_wait_p50",
                                      "bottleneck_wait_p99")}  # fmt: skip
        load.setdefault(r["system"], {})[_load_key(r)] = keep
    return {"clean": clean, "lossy_tcp": tcp, "lossy_ping": ping, "load": load}


def _load_key(r: dict) -> str:
    return f"{r['streams']}x{r['cc']}@{_lk(r['loss'])}"


# --- targets -----------------------------------------------------------------------------------


def _target(
    text: str,
    value: float | None,
    limit: float | None,
    higher: bool,
    unit: str = "",
    fmt: str = ".2f",
) -> dict[str, Any]:
    """A figure against its limit; margin = how far past the limit, relative
    to it, positive when better than needed."""
    if value is None or limit is None:
        return {"target": text, "met": None, "measured": "not measured", "limit": "", "margin": ""}
    met = value >= limit if higher else value <= limit
    margin = (value - limit) / limit if higher else (limit - value) / limit
    return {
        "target": text,
        "met": bool(met),
        "measured": f"{value:{fmt}}{unit}",
        "limit": f"{'≥' if higher else '≤'} {limit:{fmt}}{unit}",
        "margin": f"{margin * 100:+.{0 if abs(margin) >= 0.1 else 1}f}%",
        "value": value,
        "limit_value": limit,
    }


def targets(res: dict, summary: dict) -> list[dict[str, Any]]:
    clean, tcp, ping = summary["clean"], summary["lossy_tcp"], summary["lossy_ping"]

    def cmed(system: str, case: str, what: str = "mbit_s") -> float | None:
        s = clean.get(system, {}).get(case, {}).get(what)
        return s["median"] if s else None

    def tmed(system: str, cc: str, loss: float, what: str = "mbit_s") -> float | None:
        s = tcp.get(system, {}).get(cc, {}).get(_lk(loss), {}).get(what)
        return s["median"] if s else None

    def pget(system: str, loss: float, what: str) -> float | None:
        p = ping.get(system, {}).get(_lk(loss))
        return p.get(what) if p and p.get("ok") else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    out = []
    for rev in (False, True):
        case = _case(1, rev)
        k, wg = cmed("kcpvpn", case), cmed("wireguard-go", case)
        out.append(
            _target(f"clean, kcpvpn defaults, {case}: ≥ 1 Gbit/s", k, 1000, True, " Mbit/s", ".0f")
        )
        out.append(_target(f"clean, {case}: kcpvpn ≥ 2× wireguard-go", ratio(k, wg), 2, True, "×"))
        kc, wc = cmed("kcpvpn", case, "cpu_s_per_gb"), cmed("wireguard-go", case, "cpu_s_per_gb")
        out.append(
            _target(
                f"clean, {case}: kcpvpn CPU-s/GB below wireguard-go's (ratio ≤ 1)",
                ratio(kc, wc), 1, False, "×",
            )
        )  # fmt: skip
    ccs = res["meta"]["config"]["ccs"]
    for cc in ccs:
        out.append(
            _target(
                f"0% loss, {cc}: kcpvpn goodput ≥ 90% of wireguard-go's",
                ratio(tmed("kcpvpn", cc, 0), tmed("wireguard-go", cc, 0)), 0.9, True, "×",
            )
        )  # fmt: skip
    if "bbr" in ccs:
        out.append(
            _target(
                "5% loss, bbr: kcpvpn goodput ≥ wireguard-go's",
                ratio(tmed("kcpvpn", "bbr", 0.05), tmed("wireguard-go", "bbr", 0.05)), 1, True, "×",
            )
        )  # fmt: skip
    if "cubic" in ccs:
        out.append(
            _target(
                "5% loss, cubic: kcpvpn goodput ≥ 50 Mbit/s",
                tmed("kcpvpn", "cubic", 0.05), 50, True, " Mbit/s", ".1f",
            )
        )  # fmt: skip
    out.append(_delivered("5% loss: every sparse ping delivered (kcpvpn defaults)", ping, 0.05))
    p99_0, p99_5 = pget("kcpvpn", 0, "p99"), pget("kcpvpn", 0.05, "p99")
    out.append(
        _target(
            "5% loss: ping p99 ≤ 1.25× the no-loss p99 (kcpvpn defaults)",
            p99_5, 1.25 * p99_0 if p99_0 else None, False, " ms", ".1f",
        )
    )  # fmt: skip
    for cc in ccs:
        out.append(
            _target(
                f"5% loss, {cc}: bytes on the wire per byte delivered ≤ 1.5 (kcpvpn defaults)",
                tmed("kcpvpn", cc, 0.05, "wire_per_byte"), 1.5, False, "", ".3f",
            )
        )  # fmt: skip
    for loss, factor in ((0.10, 1.5), (0.20, 3.0)):
        for cc in ccs:
            out.append(
                _target(
                    f"{loss:.0%} loss, {cc}: kcpvpn goodput ≥ {factor:g}× wireguard-go's",
                    ratio(tmed("kcpvpn", cc, loss), tmed("wireguard-go", cc, loss)),
                    factor, True, "×",
                )
            )  # fmt: skip
    for loss in (0.10, 0.20):
        out.append(
            _delivered(
                f"{loss:.0%} loss: every sparse ping delivered (kcpvpn defaults)", ping, loss
            )
        )
        k, wg = pget("kcpvpn", loss, "p99"), pget("wireguard-go", loss, "p99")
        t = _target(
            f"{loss:.0%} loss: ping p99 below wireguard-go's (kcpvpn defaults)",
            k, wg, False, " ms", ".1f",
        )  # fmt: skip
        if t["met"] and k == wg:
            t["met"] = False  # "below" is strict
        out.append(t)
    out += _load_targets(summary.get("load", {}))
    return out


# The goals for latency under load (40 ms RTT, 100 Mbit/s, deep queue):
# goodput at least 90% of wave 1's (85 Mbit/s at 0%; 60 cubic / 72 bbr at 5%).
LOAD_GOODPUT = {("cubic", 0.0): 0.9 * 85, ("bbr", 0.0): 0.9 * 85,
                ("cubic", 0.05): 0.9 * 60, ("bbr", 0.05): 0.9 * 72}  # fmt: skip
LOAD_RTT_MS = 40.0


def _load_targets(load: dict) -> list[dict[str, Any]]:
    out = []
    for _key, g in sorted(load.get("kcpvpn", {}).items()):
        if not g.get("ok"):
            continue
        what = f"loaded, {g['streams']}×{g['cc']}, {g['loss']:.0%} loss"
        t = _target(f"{what}: pings delivered", g["ping_received"], g["ping_sent"], True, "", ".0f")
        out.append(t)
        out.append(
            _target(f"{what}: ping p99 ≤ RTT + 10 ms", g["ping_p99"], LOAD_RTT_MS + 10,
                    False, " ms", ".1f")
        )  # fmt: skip
        goal = LOAD_GOODPUT.get((g["cc"], g["loss"])) if g["streams"] == 1 else None
        if goal:
            out.append(
                _target(f"{what}: goodput ≥ 90% of wave 1's", g["mbit_s"], goal, True,
                        " Mbit/s", ".1f")
            )  # fmt: skip
        if g["streams"] > 1:
            out.append(_target(f"{what}: Jain's index ≥ 0.95", g["jain"], 0.95, True, "", ".3f"))
    return out


def _load_rows(res: dict, summary: dict, labels: dict) -> list[list[str]]:
    rows = []
    for s in _systems(res, res.get("load", [])):
        for key, g in summary["load"].get(s, {}).items():
            if not g.get("ok"):
                rows.append([labels.get(s, s), key, "failed", "", "", "", ""])
                continue
            rows.append(
                [
                    labels.get(s, s),
                    f"{g['streams']}×{g['cc']}, {g['loss']:.0%} loss",
                    f"{_f(g['ping_p50'])} / {_f(g['ping_p99'])}",
                    f"{g['ping_received']}/{g['ping_sent']}",
                    _f(g["mbit_s"]),
                    _f(g["jain"], ".3f") if g.get("jain") is not None else "",
                    _wait(g),
                ]
            )
    return rows


LOAD_HEADER = [
    "system", "bulk upload", "ping p50 / p99 ms", "pings", "bulk Mbit/s", "Jain",
    "bottleneck wait p50 / p99 ms",
]  # fmt: skip


def _wait(g: dict) -> str:
    """The upload's bottleneck queue wait, as histogram bucket bounds (≤)."""
    if g.get("bottleneck_wait_p50") is None:
        return ""
    return f"≤{g['bottleneck_wait_p50']:g} / ≤{g['bottleneck_wait_p99']:g}"


def _delivered(text: str, ping: dict, loss: float) -> dict[str, Any]:
    p = ping.get("kcpvpn", {}).get(_lk(loss))
    if not p or not p.get("ok"):
        return {"target": text, "met": None, "measured": "not measured", "limit": "", "margin": ""}
    lost = p["sent"] - p["received"]
    return {
        "target": text,
        "met": lost == 0,
        "measured": f"{p['received']}/{p['sent']}",
        "limit": f"{p['sent']}/{p['sent']}",
        "margin": "" if lost == 0 else f"{lost} lost",
    }


# --- Markdown --------------------------------------------------------------------------------


def _sp(s: dict | None, fmt: str = ".1f") -> str:
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:{fmt}}"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else f"{v:{fmt}}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def markdown(res: dict, summary: dict, tgts: list[dict], plots: dict[str, str]) -> str:
    meta, m = res["meta"], res["meta"]["machine"]
    cfg = meta["config"]
    labels = {n: s["label"] for n, s in res["systems"].items()}
    dur = meta.get("duration_s")
    L: list[str] = [f"# kcpvpn bench, {meta['started']}", ""]
    L.append(
        f"{'Quick' if cfg['quick'] else 'Full'} run: {_f(dur / 60 if dur else None)} min "
        f"(estimated {meta['estimated_s'] / 60:.1f} min); {cfg['repeats']} repeat(s) per TCP "
        "figure, "
        "median (min–max) when more than one."
    )
    L.append(
        f"Machine: {m['cpu_model']}, {m['cores']} cores, kernel {m['kernel']}; commit "
        f"`{(m.get('git_commit') or '?')[:12]}`"
        f"{' (uncommitted changes)' if m.get('git_dirty') else ''}; "
        f"{m.get('kcpvpn') or 'kcpvpn ?'}; {m.get('wireguard_go') or 'no wireguard-go'}."
    )
    L.append("")
    if meta.get("interrupted"):
        L += ["**The run was interrupted or failed: the figures below are partial.**", ""]
    for name, why in res.get("skipped", {}).items():
        L += [f"**{name} was skipped**: {why}", ""]

    met = sum(1 for t in tgts if t["met"] is True)
    missed = sum(1 for t in tgts if t["met"] is False)
    unmeasured = sum(1 for t in tgts if t["met"] is None)
    L += [
        "## Targets",
        "",
        f"{met} met, {missed} missed, {unmeasured} not measured. Ratios compare figures of "
        "this run. Margin: how far the figure is past its limit, relative to the limit "
        "(positive = better than needed).",
        "",
    ]
    L += _table(
        ["target", "measured", "limit", "result", "margin"],
        [
            [
                t["target"],
                t["measured"],
                t["limit"],
                {True: "met", False: "**missed**", None: "–"}[t["met"]],
                t["margin"],
            ]
            for t in tgts
        ],
    )

    if summary["clean"]:
        L += [
            "## Clean link",
            "",
            "Kernel bridge between the namespaces, no emulator. iperf3 TCP through the tunnel "
            f"for {cfg['clean_seconds']:g} s; up = client → server, down = server → client (-R). "
            "CPU-s/GB: user + system CPU seconds of both daemons per GB delivered.",
            "",
        ]
        rows = []
        for s in _systems(res, res["clean"]):
            for case, g in summary["clean"].get(s, {}).items():
                rows.append(
                    [
                        labels.get(s, s),
                        case,
                        _sp(g["mbit_s"], ".0f"),
                        _sp(g["cpu_s_per_gb"], ".2f"),
                        _sp(g["retransmits"], ".0f"),
                        f"{g['ok_runs']}" + (f" ({g['failed']} failed)" if g["failed"] else ""),
                    ]
                )
        L += _table(["system", "case", "Mbit/s", "CPU-s/GB", "TCP retransmits", "runs"], rows)
        if "cpu" in plots:
            L += [f"![CPU seconds per GB]({plots['cpu']})", ""]

    if summary["lossy_tcp"] or summary["lossy_ping"]:
        link = cfg["lossy_link"]
        losses = cfg["losses"]
        L += [
            "## Lossy link",
            "",
            f"Emulated link, each way: {link['delay_ms']} ms delay "
            f"({2 * link['delay_ms']} ms RTT), "
            f"{link['rate_mbit']} Mbit/s, {link['queue_bytes'] / 1000:.0f} kB queue, random loss "
            f"as in the columns. iperf3, one TCP stream client → server, "
            f"{cfg['lossy_omit']:g} s warm-up omitted then {cfg['lossy_seconds']:g} s measured; "
            "the inner congestion control set with `iperf3 -C`.",
            "",
        ]
        head = ["system"] + [f"{x:.0%}" for x in losses]
        for cc in cfg["ccs"]:
            rows = []
            for s in _systems(res, res["lossy_tcp"]):
                g = summary["lossy_tcp"].get(s, {}).get(cc, {})
                rows.append(
                    [labels.get(s, s)] + [_cell(g.get(_lk(x)), "mbit_s", ".1f") for x in losses]
                )
            L += [f"### Goodput, Mbit/s, inner {cc}", ""] + _table(head, rows)
            if f"goodput_{cc}" in plots:
                L += [f"![goodput {cc}]({plots[f'goodput_{cc}']})", ""]
        L += [
            "### Bytes on the wire per byte delivered",
            "",
            "Bytes of the frames offered to the emulated link in both directions (what it "
            "dropped included: Ethernet, IP, UDP/TCP, tunnel headers, FEC parity, "
            "retransmissions, ACKs) divided by the TCP payload bytes the receiver got, sampled "
            "over the measured seconds (docs/bench.md).",
            "",
        ]
        rows = []
        for s in _systems(res, res["lossy_tcp"]):
            for cc in cfg["ccs"]:
                g = summary["lossy_tcp"].get(s, {}).get(cc, {})
                rows.append(
                    [labels.get(s, s), cc]
                    + [_cell(g.get(_lk(x)), "wire_per_byte", ".3f") for x in losses]
                )
        L += _table(["system", "cc"] + head[1:], rows)
        if "wire" in plots:
            L += [f"![wire bytes]({plots['wire']})", ""]
        L += [
            "### Sparse pings",
            "",
            f"{cfg['pings']} pings {cfg['ping_interval'] * 1000:.0f} ms apart, alone on the "
            "link (not during iperf3). RTT in ms.",
            "",
        ]
        rows = []
        for s in _systems(res, res["lossy_ping"]):
            for x in losses:
                p = summary["lossy_ping"].get(s, {}).get(_lk(x))
                if not p:
                    continue
                if not p.get("ok"):
                    rows.append([labels.get(s, s), f"{x:.0%}", "failed", "", "", "", ""])
                    continue
                rows.append(
                    [
                        labels.get(s, s),
                        f"{x:.0%}",
                        f"{p['received']}/{p['sent']}",
                        _f(p["p50"]),
                        _f(p["p90"]),
                        _f(p["p99"]),
                        _f(p["max"]),
                    ]
                )
        L += _table(["system", "loss", "delivered", "p50", "p90", "p99", "max"], rows)
        if "ping" in plots:
            L += [f"![ping RTT]({plots['ping']})", ""]

    failed = [
        (kind, r)
        for kind in ("clean", "lossy_tcp", "lossy_ping", "load")
        for r in res.get(kind, [])
        if not r.get("ok")
    ]
    if failed:
        L += ["## Failed runs", ""]
        for kind, r in failed:
            what = ", ".join(
                f"{k}={r[k]}"
                for k in ("system", "streams", "reverse", "loss", "cc", "repeat")
                if k in r
            )
            err = " ".join(str(r.get("error", "")).split())[:400]
            L.append(f"- {kind} {what}: {err}")
        L.append("")

    if summary.get("load"):
        link = cfg.get("load_link", {})
        L += [
            "## Latency under load",
            "",
            f"A bulk TCP upload through the tunnel and a ping every {cfg['ping_interval']:g} s "
            f"over the same tunnel, after {cfg.get('load_warmup', 0):g} s of upload; the link: "
            f"{2 * link.get('delay_ms', 0):g} ms RTT, {link.get('rate_mbit', 0):g} Mbit/s, a "
            f"drop-tail queue of {link.get('queue_bytes', 0) / 1e6:g} MB; one run each.",
            "",
        ]
        L += _table(LOAD_HEADER, _load_rows(res, summary, labels))
        L.append("")
    L += ["## Systems and commands", ""]
    for name, s in res["systems"].items():
        L.append(f"- **{name}**: {s['label']}")
        for scen, cmds in s.get("commands", {}).items():
            for c in cmds:
                L.append(f"  - {scen}: `{c}`")
    example = next((r["command"] for r in res.get("lossy_tcp", []) if r.get("ok")), None)
    if example:
        L.append(f"- iperf3 on the lossy link, e.g.: `{example}`")
    L += ["", "How each figure is measured: docs/bench.md. Every raw figure: results.json.", ""]
    return "\n".join(L)


def _cell(g: dict | None, what: str, fmt: str) -> str:
    if not g:
        return "–"
    s = _sp(g.get(what), fmt)
    if g.get("failed"):
        s += f" ({g['failed']} failed)"
    return s


# --- plots -----------------------------------------------------------------------------------


def plot(res: dict, summary: dict, out: Path) -> dict[str, str]:
    """Writes the PNGs that have data; returns {plot key: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {n: s["label"] for n, s in res["systems"].items()}
    cfg = res["meta"]["config"]
    made: dict[str, str] = {}

    def save(fig: Any, key: str, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made[key] = name

    def finish(
        fig: Any, ax: Any, drawn: bool, key: str, name: str, bottom: float, legend: int, **labels
    ) -> None:
        """Labels, grid and legend, then save; a plot with nothing drawn is dropped."""
        if not drawn:
            plt.close(fig)
            return
        ax.set(xlabel="random loss each way (%)", **labels)
        ax.set_ylim(bottom=bottom)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend)
        save(fig, key, name)

    def lossy_lines(
        ax: Any, what: str, cc: str, style: str = "-", label: Callable[[str], str] | None = None
    ) -> bool:
        drawn = False
        for s in _systems(res, res["lossy_tcp"]):
            pts = [
                (g["loss"] * 100, g[what])
                for g in summary["lossy_tcp"].get(s, {}).get(cc, {}).values()
                if g.get(what)
            ]
            if not pts:
                continue
            pts.sort()
            xs = [x for x, _ in pts]
            ys = [v["median"] for _, v in pts]
            err = [
                [v["median"] - v["min"] for _, v in pts],
                [v["max"] - v["median"] for _, v in pts],
            ]
            ax.errorbar(
                xs, ys, yerr=err, marker="o", linestyle=style, capsize=3,
                color=COLOURS.get(s), label=(label or labels.get)(s),
            )  # fmt: skip
            drawn = True
        return drawn

    for cc in cfg["ccs"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        finish(
            fig, ax, lossy_lines(ax, "mbit_s", cc), f"goodput_{cc}",
            PLOTS["goodput"].format(cc=cc), 0, 8,
            ylabel="TCP goodput (Mbit/s)",
            title=f"Goodput vs loss, inner {cc} (40 ms RTT, 100 Mbit/s)",
        )  # fmt: skip

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for cc, style in zip(cfg["ccs"], ("-", "--", ":", "-."), strict=False):
        drawn |= lossy_lines(
            ax, "wire_per_byte", cc, style, lambda s, cc=cc: f"{labels.get(s, s)}, {cc}"
        )
    if drawn:
        ax.axhline(1.5, color="black", linewidth=0.8, linestyle=":", label="target ≤ 1.5 (5% loss)")
    finish(
        fig, ax, drawn, "wire", PLOTS["wire"], 0.9, 7,
        ylabel="bytes on the wire per byte delivered",
        title="Wire overhead vs loss (both directions, drops included)",
    )  # fmt: skip

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for s in _systems(res, res["lossy_ping"]):
        pts = sorted(
            (p["loss"] * 100, p)
            for p in summary["lossy_ping"].get(s, {}).values()
            if p.get("ok") and p.get("p50") is not None
        )
        if not pts:
            continue
        xs = [x for x, _ in pts]
        c = COLOURS.get(s)
        ax.plot(xs, [p["p50"] for _, p in pts], "o-", color=c, label=f"{labels.get(s, s)} p50")
        ax.plot(xs, [p["p99"] for _, p in pts], "s--", color=c, label=f"{labels.get(s, s)} p99")
        for x, p in pts:
            if p["delivery"] >= 1:
                continue
            ax.annotate(
                f"{p['delivery'] * 100:.0f}%",
                (x, p["p99"]),
                textcoords="offset points",
                xytext=(3, 4),
                fontsize=7,
                color=c,
            )
        drawn = True
    finish(
        fig, ax, drawn, "ping", PLOTS["ping"], 0, 7,
        ylabel="ping RTT (ms)",
        title="Sparse pings (100 ms apart): p50, p99; labels: delivered if < 100%",
    )  # fmt: skip

    clean = summary["clean"]
    systems = [
        s
        for s in _systems(res, res["clean"])
        if any(g.get("cpu_s_per_gb") for g in clean[s].values())
    ]
    if systems:
        cases = list(dict.fromkeys(c for s in systems for c in clean[s]))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            vals = [clean[s].get(c, {}).get("cpu_s_per_gb") for c in cases]
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(cases))]
            ys = [v["median"] if v else 0 for v in vals]
            err = [
                [v["median"] - v["min"] if v else 0 for v in vals],
                [v["max"] - v["median"] if v else 0 for v in vals],
            ]
            ax.bar(xs, ys, width, yerr=err, capsize=3, color=COLOURS.get(s), label=labels.get(s, s))
        ax.set_xticks(range(len(cases)), cases)
        ax.set(ylabel="CPU seconds per GB (both daemons)", title="CPU cost on the clean link")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
        save(fig, "cpu", PLOTS["cpu"])
    return made


# --- entry points ------------------------------------------------------------------------------


def write(res: dict, out: Path) -> Path:
    """report.md and the PNGs in `out`; the summary and targets go into
    results.json too. Returns the report's path."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(res)
    tgts = targets(res, summary)
    try:
        plots = plot(res, summary, out)
    except Exception as e:  # a report without plots beats no report
        plots = {}
        res.setdefault("meta", {})["plot_error"] = f"{type(e).__name__}: {e}"
    res["summary"] = summary
    res["targets"] = tgts
    (out / "results.json").write_text(json.dumps(res, indent=1))
    path = out / "report.md"
    path.write_text(markdown(res, summary, tgts, plots))
    return path


def print_summary(res: dict, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = res.get("summary") or summarize(res)
    labels = {n: s["label"] for n, s in res["systems"].items()}
    cfg = res["meta"]["config"]
    if summary["clean"]:
        t = Table("system", "case", "Mbit/s", "CPU-s/GB", title="clean link")
        for s in _systems(res, res["clean"]):
            for case, g in summary["clean"][s].items():
                t.add_row(
                    labels.get(s, s), case, _sp(g["mbit_s"], ".0f"), _sp(g["cpu_s_per_gb"], ".2f")
                )
        console.print(t)
    if summary["lossy_tcp"] or summary["lossy_ping"]:
        losses = cfg["losses"]
        t = Table(
            "system",
            "figure",
            *[f"{x:.0%}" for x in losses],
            title="lossy link (40 ms, 100 Mbit/s)",
        )
        for s in _systems(res, res["lossy_tcp"] + res["lossy_ping"]):
            for cc in cfg["ccs"]:
                g = summary["lossy_tcp"].get(s, {}).get(cc)
                if g:
                    t.add_row(
                        labels.get(s, s),
                        f"Mbit/s {cc}",
                        *[_cell(g.get(_lk(x)), "mbit_s", ".1f") for x in losses],
                    )
            p = summary["lossy_ping"].get(s)
            if p:
                cells = []
                for x in losses:
                    q = p.get(_lk(x))
                    cells.append(
                        f"{_f(q['p99'])} ({q['received']}/{q['sent']})"
                        if q and q.get("ok")
                        else "–"
                    )
                t.add_row(labels.get(s, s), "ping p99 ms (delivered)", *cells)
        console.print(t)
    if summary.get("load"):
        t = Table(*LOAD_HEADER, title="latency under load")
        for row in _load_rows(res, summary, labels):
            t.add_row(*row)
        console.print(t)
    tg = res.get("targets", [])
    console.print(
        f"targets: {sum(1 for x in tg if x['met'] is True)} met, "
        f"{sum(1 for x in tg if x['met'] is False)} missed, "
        f"{sum(1 for x in tg if x['met'] is None)} not measured"
    )
    dur = res["meta"].get("duration_s")
    console.print(f"report: [bold]{path}[/bold] (run took {_f(dur / 60 if dur else None)} min)")
