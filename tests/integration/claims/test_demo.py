"""The demo (`kcpvpn lab demo`, what `make lab` runs): it runs for --duration
seconds and exits 0, shows per-client figures, and leaves nothing behind;
Ctrl-C (SIGINT) tears it down the same way."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kcpvpn_lab.topology import RUN_ROOT, lab_namespaces
from kcpvpn_lab.vpn import kcpvpn_argv

pytestmark = pytest.mark.netns


def _prefix(out: str) -> str:
    m = re.search(r"lab (kvl[0-9a-f]+): server \+ 2 client", out)
    assert m, out
    return m.group(1)


def _assert_nothing_left(prefix: str, out: str) -> None:
    assert f"no namespace of {prefix} is left" in out, out
    assert not [ns for ns in lab_namespaces() if ns.startswith(prefix + "-")]
    assert not Path(RUN_ROOT / prefix[3:]).exists(), "a clean run removes its run directory"


def _rows(out: str) -> list[str]:
    # A client row: name, tunnel address, ping p50 / p99, KCP RTT, loss, ..., Mbit/s.
    return re.findall(
        r"│ client(\d) +│ 192\.168\.88\.\d+ +│ +[\d.]+ / [\d.]+ │ +\d+ ms │ "
        r"+[\d.]+% / [\d.]+% │ +\d+ │ +\d+ │ +[\d.]+ / [\d.]+ │",
        out,
    )


def test_demo_runs_for_its_duration_shows_figures_and_cleans_up():
    r = subprocess.run(
        [*kcpvpn_argv(), "lab", "demo", "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    prefix = _prefix(out)
    assert "(--rapid-fec on both sides)" in out
    rows = _rows(out)
    assert {"1", "2"} <= set(rows), out
    # The last table: traffic really flowed and the link really lost some of it.
    last = out[out.rindex("kcpvpn lab demo —") :]
    m = re.search(r"to server: (\d+) frames, (\d+) dropped", last)
    assert m and int(m.group(1)) > 1000 and int(m.group(2)) > 0, last
    assert re.search(r"│ client1 .*│ +[1-9][\d.]* / [\d.]+ │\n", last), "client1 sent nothing"
    _assert_nothing_left(prefix, out)


def test_demo_ctrl_c_tears_everything_down():
    p = subprocess.Popen(
        [*kcpvpn_argv(), "lab", "demo", "--clients", "2", "--rate", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = ""
        deadline = time.monotonic() + 60
        # Wait for the first figures (snapshots come every 2 s when not on a terminal).
        while "│ client2" not in out and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            out += line
        assert "│ client2" in out, out
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
        out += rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    assert "Ctrl-C: tearing down" in out
    _assert_nothing_left(_prefix(out), out)
