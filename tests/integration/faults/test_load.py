"""Scale: many real client sessions (the lab's load driver: the product's
client endpoint, one UDP socket per client, several clients per source
address) against one real server. Counts and completeness only; the
figures (connect time, CPU, memory) come from `kcpvpn lab load`."""

from __future__ import annotations

import pytest

from kcpvpn_lab.load import run_load

pytestmark = pytest.mark.netns

CLIENTS = 200


def test_200_clients_connect_are_answered_and_leave_nothing_behind():
    res = run_load(CLIENTS, idle_seconds=1.0, connect_timeout=40.0, say=lambda _: None)
    f = res.figures
    assert res.ok, (res.problems, f)
    assert f["connected"] == CLIENTS
    assert f["pings_answered"] == f["pings_sent"] == CLIENTS
    assert f["server_clients"] == f["server_interfaces"] == CLIENTS
    # Every client left: no session, interface or descriptor stays.
    assert f["goodbye_s"] is not None
    assert f["server_fds_after_goodbye"] <= f["server_fds_before"] + 8
    # Every client back, then SIGTERM: a clean exit that removes every interface.
    assert f["sigterm_exit_code"] == 0
    assert f["interfaces_after_sigterm"] == 0
    assert f["goodbyes_from_server"] >= CLIENTS
