"""`python -m kcpvpn_lab.bench` end to end with a tiny scenario set: kcpvpn and
no tunnel (plus wireguard-go when it is installed), one short iperf3 run per
figure, one loss level, ten pings. Checks that every figure the report is built
from is in results.json and plausible, and that report.md and the plots exist.
It asserts no speed: only that traffic crossed and was counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_smoke(tmp_path):
    systems = ["none", "kcpvpn"] + (["wireguard-go"] if shutil.which("wireguard-go") else [])
    out = tmp_path / "bench"
    argv = [
        sys.executable, "-m", "kcpvpn_lab.bench", "--out", str(out),
        "--only", ",".join(systems), "--repeats", "1",
        "--clean-seconds", "2", "--streams", "1", "--directions", "up",
        "--lossy-seconds", "2", "--omit", "1", "--losses", "0.05", "--ccs", "cubic",
        "--pings", "10",
        "--load-losses", "0", "--load-seconds", "2", "--load-cases", "cubic:1",
    ]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"bench failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "report:" in r.stdout

    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["machine"]["kernel"] and res["meta"]["machine"]["cores"] >= 1
    assert res["meta"]["duration_s"] > 0 and not res["meta"]["interrupted"]

    failed = [
        r for k in ("clean", "lossy_tcp", "lossy_ping", "load") for r in res[k] if not r["ok"]
    ]
    assert not failed, failed

    clean = {r["system"]: r for r in res["clean"]}
    assert sorted(clean) == sorted(systems)
    for name, row in clean.items():
        assert row["mbit_s"] > 0 and row["bytes"] > 0, row
        if name == "none":
            assert "cpu_s_per_gb" not in row  # no daemon, no CPU figure
        else:
            assert row["cpu_s_per_gb"] > 0, row

    tcp = {r["system"]: r for r in res["lossy_tcp"]}
    assert sorted(tcp) == sorted(systems)
    for row in tcp.values():
        assert row["loss"] == 0.05 and row["cc"] == "cubic"
        assert row["sender_cc"] == "cubic"
        assert row["mbit_s"] > 0, row
        # Headers alone make every byte delivered cost more than one on the wire.
        assert row["wire_per_byte"] >= 1, row
        emu = row["emulator"]
        # The loss set live on the shared topology was in force during the run.
        assert emu["to_server"]["dropped_loss"] + emu["to_client"]["dropped_loss"] > 0, emu

    pings = {r["system"]: r for r in res["lossy_ping"]}
    assert sorted(pings) == sorted(systems)
    for row in pings.values():
        assert row["sent"] == 10 and 0 < row["received"] <= 10, row
        assert row["delivery"] == row["received"] / row["sent"]
        assert row["p50"] <= row["p90"] <= row["p99"] <= row["max"], row
        assert row["p50"] >= 39, row  # 20 ms each way: the pings crossed the emulated link

    # The loaded link: one bulk upload with pings beside it, through every system
    # that runs the scenario (kcpvpn-fifo is not in this run's --only).
    load = {r["system"]: r for r in res["load"]}
    assert sorted(load) == sorted(systems)
    for row in load.values():
        assert row["cc"] == "cubic" and row["streams"] == 1, row
        assert row["mbit_s"] > 0 and 0 < row["ping_received"] <= row["ping_sent"], row
        assert row["ping_p50"] >= 39, row  # the pings crossed the 40 ms loaded link
        # The emulator timed the upload's frames in its bottleneck queue.
        assert sum(row["bottleneck_wait_hist"]) > 0, row
        assert row["bottleneck_wait_p50"] <= row["bottleneck_wait_p99"], row

    assert {t["target"] for t in res["targets"]}, "no targets evaluated"
    report = (out / "report.md").read_text()
    for heading in (
        "## Targets",
        "## Clean link",
        "## Lossy link",
        "### Sparse pings",
        "## Latency under load",
    ):
        assert heading in report
    assert "40 ms RTT, 100 Mbit/s" in report  # the loaded link, as configured
    for name in systems:
        assert res["systems"][name]["label"] in report
    for png in (
        "goodput_vs_loss_cubic.png",
        "ping_rtt_vs_loss.png",
        "wire_bytes_vs_loss.png",
        "cpu_per_gb_clean.png",
    ):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
