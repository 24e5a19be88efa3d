"""Daemon logging: text, JSON, the journal's own timestamps, quiet libraries."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from kcpvpn.observe import logs


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quiet = {n: logging.getLogger(n).level for n in logs.QUIET_LIBRARIES}
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)
    for n, lv in quiet.items():
        logging.getLogger(n).setLevel(lv)


def test_json_lines_parse_and_carry_level_logger_message(restore_logging):
    buf = io.StringIO()
    logs.setup("debug", "json", stream=buf)
    logging.getLogger("kcpvpn.server").warning("refused a client: %s", "pool exhausted")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kcpvpn").exception("failed")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "kcpvpn.server"
    assert lines[0]["message"] == "refused a client: pool exhausted"
    assert lines[0]["time"].endswith("Z") and lines[0]["pid"] == os.getpid()
    assert "ValueError: boom" in lines[1]["exception"]


def test_library_chatter_stays_out_of_debug(restore_logging):
    buf = io.StringIO()
    logs.setup("debug", "text", stream=buf)
    logging.getLogger("pyroute2.netlink.nlsocket").debug("message dump")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    logging.getLogger("kcpvpn.client").debug("our own decision")
    out = buf.getvalue()
    assert "our own decision" in out
    assert "message dump" not in out and "selector" not in out


def test_setting_up_twice_leaves_one_handler(restore_logging):
    buf = io.StringIO()
    logs.setup("info", "text", stream=buf)
    logs.setup("info", "text", stream=buf)
    logging.getLogger("kcpvpn").info("once")
    assert buf.getvalue().count("once") == 1


SCRIPT = """
import logging, sys
from kcpvpn.observe import logs
logs.setup("info", "text")
logging.getLogger("kcpvpn.server").info("listening on [::]:4000")
logging.getLogger("kcpvpn.server").error("cannot set up an interface")
"""


def _run_logging(tmp_path, journal_stream: str | None) -> str:
    """Runs SCRIPT with stderr in a file; JOURNAL_STREAM as given."""
    err = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(err, "w") as f:
        if journal_stream == "this file":
            st = os.fstat(f.fileno())
            journal_stream = f"{st.st_dev}:{st.st_ino}"
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, env=env, check=True, timeout=30)
    return err.read_text()


def test_under_the_journal_lines_have_a_priority_and_no_timestamp(tmp_path):
    out = _run_logging(tmp_path, "this file").splitlines()
    assert out == [
        "<6>kcpvpn.server: listening on [::]:4000",
        "<3>kcpvpn.server: cannot set up an interface",
    ]


@pytest.mark.parametrize("value", [None, "1:2", "garbage"])
def test_elsewhere_lines_have_their_timestamp(tmp_path, value):
    # JOURNAL_STREAM inherited by a process whose stderr went elsewhere does not count.
    out = _run_logging(tmp_path, value).splitlines()
    assert len(out) == 2
    assert out[0].split(" ", 2)[2] == "INFO kcpvpn.server: listening on [::]:4000"
    assert out[0][:4].isdigit()
