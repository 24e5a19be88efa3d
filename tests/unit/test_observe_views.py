"""`kcpvpn status` and `kcpvpn top` drawn from status documents: 80 columns,
rates from counters, sorting, keys, daemons that went away."""

from __future__ import annotations

import copy

import pytest
from rich.console import Console

from kcpvpn.observe.top import COLUMNS, Top, layout, sparkline
from kcpvpn.status_view import render


def session(cid: str, ip: str, iface: str, bytes_in=0, bytes_out=0, srtt=40, fixed=0, resent=0):
    return {
        "client_id": cid,
        "interface": iface,
        "ip": ip,
        "remote": "10.77.0.11:40000",
        "since": 100.0,
        "session_id": hash(cid) & 0xFFFF,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "wire_bytes_in": 2 * bytes_out,
        "wire_bytes_out": 2 * bytes_in,
        "fec_recovered": fixed,
        "fec_parity": 1.63,
        "fec_loss_ppm": 50000,
        "loss_ppm": 50000,
        "kcp": {"srtt_ms": srtt, "retransmits": resent, "segments_sent": 1000},
        "queue_delay_ms": 4,
        "max_queue_delay_ms": 12,
        "queued_bytes": 30_000,
        "codel_drops": 2,
        "ecn_marks": 17,
    }


def server_doc(*clients) -> dict:
    return {
        "mode": "server",
        "pid": 4242,
        "started": 0.0,
        "listen": "[::]:4000",
        "vni_mode": "tun",
        "clients": list(clients),
        "endpoint": {},
    }


def text_of(render_fn, width=80) -> str:
    con = Console(width=width, record=True, color_system=None, force_terminal=False)
    render_fn(con)
    return con.export_text()


# -- kcpvpn status -------------------------------------------------------------


def test_status_fits_80_columns_and_shows_every_figure():
    doc = server_doc(
        session(
            "site-1",
            "192.168.88.2",
            "kvs0",
            bytes_in=1_200_000,
            bytes_out=3_500_000,
            fixed=40,
            resent=12,
        ),
        session("a-long-client-id", "fd88::1234:5678:9abc", "kvs1"),
    )
    out = text_of(lambda c: render(doc, "/run/kcpvpn/server-4000.sock", c))
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "2 clients" in out
    for want in (
        "site-1",
        "192.168.88.2 on kvs0 from 10.77.0.11:40000",
        "RTT 40 ms",
        "resent 12 (1.2%)",
        "FEC fixed 40",
        "parity 1.63 (loss 5.0%)",
        "sent 1.1 MiB",
        "received 3.3 MiB",
        "wire/payload 2.00",
        "dropped 0",
        "queue 4 ms (max 12)",
        "waiting 29.3 KiB",
        "CoDel drops 2",
        "ECN marks 17",
    ):
        assert want in out, (want, out)


def test_status_says_no_clients():
    out = text_of(lambda c: render(server_doc(), "/x.sock", c))
    assert "no clients" in out and "0 clients" in out


def test_status_of_a_connecting_client():
    doc = {
        "mode": "client",
        "pid": 1,
        "started": 0.0,
        "server": "10.77.0.1:4000",
        "state": "connecting",
        "interface": None,
        "ip": None,
        "sessions": [],
        "endpoint": {},
    }
    out = text_of(lambda c: render(doc, "/y.sock", c))
    assert "no session (connecting)" in out


# -- kcpvpn top ----------------------------------------------------------------


def test_sparkline_scales_to_the_window_and_marks_unknowns():
    assert sparkline([0, 5, 10], 3) == "▁▅█"
    assert sparkline([None, 0, 0], 3) == " ▁▁"
    assert sparkline([1, 2, 3, 4, 8], 2) == "▅█"  # 4 of 8 rounds up to the middle bar
    assert sparkline([], 4) == "    "


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_layout_fits_and_keeps_the_important_columns(width):
    cols, col_w = layout(width)
    used = 15 + len(cols) * (col_w + 1)
    assert used <= width
    keys = [c.key for c in cols]
    if width >= 100:
        assert keys == [c.key for c in COLUMNS], "all eight figures fit in 100 columns"
    elif width == 80:
        # The FEC parity count goes first: loss and repairs say the same more plainly.
        assert keys == [c.key for c in COLUMNS if c.key != "parity"]
    assert "rtt" in keys and "down" in keys


class FakeDaemons:
    """Status documents by socket path, changed by the test between polls."""

    def __init__(self, docs: dict[str, dict]):
        self.docs = docs
        self.now = 1000.0

    def read(self, path: str) -> dict:
        doc = self.docs[path]
        if isinstance(doc, Exception):
            raise doc
        return copy.deepcopy(doc)

    def clock(self) -> float:
        return self.now


def lines_of(top: Top, width=80, height=24) -> list[str]:
    return top.frame(width, height, now=60.0).plain.splitlines()


def test_top_turns_counters_into_rates_and_draws_80x24():
    d = FakeDaemons({"/s.sock": server_doc(session("site-1", "192.168.88.2", "kvs0"))})
    top = Top(["/s.sock"], read=d.read, clock=d.clock)
    top.poll()
    first = lines_of(top)
    # One second later: 125 000 bytes each way (1 Mbit/s), 3 resent, 5 FEC repairs.
    d.now += 1.0
    d.docs["/s.sock"] = server_doc(
        session(
            "site-1",
            "192.168.88.2",
            "kvs0",
            bytes_in=125_000,
            bytes_out=250_000,
            fixed=5,
            resent=3,
            srtt=50,
        )
    )
    top.poll()
    frame = lines_of(top)
    assert len(frame) <= 24 and max(map(len, frame)) <= 80, frame
    row = next(line for line in frame if line.startswith("site-1"))
    # The server received 250 000 B (up: 2.0 Mbit/s) and sent 125 000 B (down: 1.0 Mbit/s).
    assert row.split()[1:] == ["50ms", "2.0M", "1.0M", "5.0%", "3.0/s", "5.0/s", "4ms"], row
    assert row != next(line for line in first if line.startswith("site-1"))
    spark = frame[frame.index(row) + 1]
    assert spark.startswith("192.168.88.2") and "█" in spark


def test_top_sort_and_reverse_keys():
    d = FakeDaemons(
        {
            "/s.sock": server_doc(
                session("aaa", "192.168.88.2", "kvs0", srtt=10),
                session("bbb", "192.168.88.3", "kvs1", srtt=90),
            )
        }
    )
    top = Top(["/s.sock"], read=d.read, clock=d.clock)
    top.poll()

    def order():
        return [line.split()[0] for line in lines_of(top) if line[:3] in ("aaa", "bbb")]

    assert order() == ["aaa", "bbb"] and "sort: name" in lines_of(top)[0]
    assert top.key("s") and top.sort == "rtt"
    assert order() == ["bbb", "aaa"], "largest RTT first"
    assert top.key("r") and order() == ["aaa", "bbb"]
    assert "sort: RTT" in lines_of(top)[0]
    assert top.key("q") is False


def test_top_says_when_a_daemon_is_gone_and_when_it_has_no_clients():
    d = FakeDaemons({"/gone.sock": ConnectionRefusedError(111, "refused"), "/s.sock": server_doc()})
    top = Top(["/gone.sock", "/s.sock"], read=d.read, clock=d.clock)
    top.poll()
    text = "\n".join(lines_of(top, width=200))
    assert "/gone.sock: nothing answers on this socket: the daemon that created it is gone" in text
    assert "no clients" in text


def test_top_with_more_sessions_than_lines_says_so():
    clients = [session(f"c{i}", f"192.168.88.{i}", f"kvs{i}") for i in range(2, 30)]
    d = FakeDaemons({"/s.sock": server_doc(*clients)})
    top = Top(["/s.sock"], read=d.read, clock=d.clock)
    top.poll()
    frame = lines_of(top)
    assert len(frame) <= 24 and "more lines: enlarge the terminal" in frame[-1]


def test_top_finds_daemons_on_each_poll():
    found: list[str] = []
    d = FakeDaemons({"/a.sock": server_doc()})
    top = Top([], read=d.read, clock=d.clock, find=lambda: list(found))
    top.poll()
    assert "no daemon found" in lines_of(top)[1]
    found.append("/a.sock")
    top.poll()
    assert "1 daemon" in lines_of(top)[0]
