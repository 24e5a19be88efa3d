"""How the lab reads its instruments: iperf3 -J reports (iperf 3.11/3.12 exit 0
on a failed run with -J, esnet/iperf#1405, so the report itself must be
checked) and the emulator's bottleneck queue-wait histogram."""

from __future__ import annotations

import json

import pytest

from kcpvpn_lab import iperf


def test_a_failed_run_raises_with_iperfs_own_words():
    text = json.dumps({"start": {}, "intervals": [], "end": {}, "error": "unable to connect"})
    with pytest.raises(iperf.IperfError, match="unable to connect"):
        iperf.report(text)


def test_a_report_without_a_summary_is_refused():
    with pytest.raises(iperf.IperfError, match="no summary"):
        iperf.report(json.dumps({"end": {"streams": []}}))
    with pytest.raises(iperf.IperfError, match="no JSON"):
        iperf.report("iperf3: error - the server is busy")


def test_a_good_report_after_other_output_is_read():
    doc = {"end": {"sum_received": {"bits_per_second": 12.5e6}, "sum_sent": {}}}
    got = iperf.report("warning: something\n" + json.dumps(doc))
    assert iperf.received_mbit(got) == 12.5


def test_bottleneck_wait_percentiles_read_the_emulators_buckets():
    from kcpvpn_lab.bench.measure import queue_wait_percentile

    bounds = [1, 2, 5, 10]
    assert queue_wait_percentile([0, 0, 0, 0, 0], bounds, 50) is None
    hist = [90, 5, 3, 1, 1]  # 100 waits; one above 10 ms
    assert queue_wait_percentile(hist, bounds, 50) == 1
    assert queue_wait_percentile(hist, bounds, 95) == 2
    assert queue_wait_percentile(hist, bounds, 99) == 10
    assert queue_wait_percentile(hist, bounds, 100) == 20  # the overflow bucket
