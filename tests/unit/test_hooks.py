"""Hooks: which file runs, with which environment, never through a shell,
never blocking the caller, killed (with its children) after the timeout."""

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from kcpvpn import hooks
from kcpvpn.hooks import ClientHooks, HookContext, HookRunner, format_addr, run_hook


def script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (PID 1 in a container
    may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for_file(path: Path, limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.01)


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


DUMP_ENV = (
    'out="$(dirname "$0")/../out.$(basename "$0")"\n'
    "for v in KV_CLIENT_ID KV_VNI_INTERFACE_NAME KV_CLIENT_IP KV_CLIENT_IP_MODE \\\n"
    "    KV_REMOTE_ADDR; do\n"
    '  eval "echo $v=\\$$v"\n'
    'done > "$out"\n'
    'echo "KCPVPN_KEY=${KCPVPN_KEY-unset}" >> "$out"\n'
)


@pytest.fixture
def hook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hooks"
    d.mkdir()
    return d


# -- which hook --------------------------------------------------------------


def test_specific_hook_wins_over_generic(hook_dir):
    script(hook_dir / "on_connected", "exit 0\n")
    script(hook_dir / "on_site1_connected", "exit 0\n")
    r = HookRunner(hook_dir)
    assert r.find("connected", "site1") == hook_dir / "on_site1_connected"
    assert r.find("connected", "site2") == hook_dir / "on_connected"
    assert r.find("connected", "") == hook_dir / "on_connected"
    assert r.find("disconnected", "site1") is None


def test_non_executable_or_non_file_is_skipped(hook_dir, caplog):
    script(hook_dir / "on_site1_connected", "exit 0\n", mode=0o644)
    (hook_dir / "on_disconnected").mkdir()
    script(hook_dir / "on_connected", "exit 0\n")
    r = HookRunner(hook_dir)
    with caplog.at_level(logging.WARNING, "kcpvpn.hooks"):
        assert r.find("connected", "site1") == hook_dir / "on_connected"
        assert r.find("disconnected", "site1") is None
    assert "not an executable regular file" in caplog.text


def test_unknown_event_is_refused(hook_dir):
    with pytest.raises(ValueError, match="unknown hook event"):
        HookRunner(hook_dir).find("exploded", "")


@pytest.mark.parametrize(
    "bad_id", ["/../../x", "../x", "a/b", "x" * 17, "é", "a b", "a\x00b", "on;rm"]
)
def test_path_escaping_or_invalid_ids_run_nothing(tmp_path, hook_dir, bad_id, caplog):
    # A file the traversal would reach, and a generic hook: neither may run.
    (hook_dir / "on_").mkdir()
    marker = tmp_path / "ran"
    script(tmp_path / "x_connected", f"touch {marker}\n")
    script(hook_dir / "on_connected", f"touch {marker}\n")
    r = HookRunner(hook_dir)
    with pytest.raises(ValueError):
        r.find("connected", bad_id)
    with caplog.at_level(logging.ERROR, "kcpvpn.hooks"):
        started = r.run(
            "connected",
            client_id=bad_id,
            interface="kvs0",
            client_ip=None,
            ip_mode=2,
            remote_addr="1.2.3.4:5",
        )
    assert started is None
    assert r.wait(10)
    assert not marker.exists()
    assert "no connected hook run" in caplog.text


# -- environment -------------------------------------------------------------


def test_server_hook_gets_the_environment(hook_dir, monkeypatch):
    monkeypatch.setenv("KCPVPN_KEY", "do-not-leak")
    script(hook_dir / "on_site1_connected", DUMP_ENV)
    r = HookRunner(hook_dir)
    path = r.run(
        "connected",
        client_id="site1",
        interface="kvs3",
        client_ip="192.168.88.7",
        ip_mode=1,
        remote_addr=("2001:db8::5", 40000),
    )
    assert path == hook_dir / "on_site1_connected"
    assert r.wait(30)
    env = read_env(hook_dir.parent / "out.on_site1_connected")
    assert env == {
        "KV_CLIENT_ID": "site1",
        "KV_VNI_INTERFACE_NAME": "kvs3",
        "KV_CLIENT_IP": "192.168.88.7",
        "KV_CLIENT_IP_MODE": "1",
        "KV_REMOTE_ADDR": "[2001:db8::5]:40000",
        "KCPVPN_KEY": "unset",
    }


def test_no_ip_is_reported_as_zeros(hook_dir):
    script(hook_dir / "on_disconnected", DUMP_ENV)
    r = HookRunner(hook_dir)
    r.run(
        "disconnected",
        client_id="",
        interface="kvs0",
        client_ip=None,
        ip_mode=2,
        remote_addr=("::ffff:198.51.100.4", 1235),
    )
    assert r.wait(30)
    env = read_env(hook_dir.parent / "out.on_disconnected")
    assert env["KV_CLIENT_IP"] == "0.0.0.0"
    assert env["KV_CLIENT_IP_MODE"] == "2"
    assert env["KV_CLIENT_ID"] == ""
    assert env["KV_REMOTE_ADDR"] == "198.51.100.4:1235"


def test_no_shell_metacharacters_are_interpreted(tmp_path):
    # A path with shell syntax in it is executed as a file name, nothing else.
    odd = tmp_path / "a;touch pwned"
    odd.mkdir()
    hook = script(odd / "on connected $(touch pwned2)", "exit 0\n")
    r = run_hook(hook, {}, timeout=10)
    assert r.returncode == 0
    assert not any(tmp_path.glob("pwned*")) and not Path("pwned").exists()


def test_format_addr():
    assert format_addr(("1.2.3.4", 5)) == "1.2.3.4:5"
    assert format_addr(("::1", 5)) == "[::1]:5"
    assert format_addr(("fe80::1%eth0", 5, 0, 2)) == "[fe80::1%eth0]:5"
    assert format_addr("already:1") == "already:1"


def test_context_environ_drops_secret_and_keeps_path():
    env = HookContext("c", "kvc0", None, 0, "1.2.3.4:5").environ(
        {"PATH": "/bin", "KCPVPN_KEY": "s"}
    )
    assert env["PATH"] == "/bin" and "KCPVPN_KEY" not in env


# -- running -------------------------------------------------------------


def test_status_and_output_go_to_the_log(hook_dir, caplog):
    script(hook_dir / "on_connected", "echo hello from hook; echo oops >&2; exit 3\n")
    r = HookRunner(hook_dir)
    with caplog.at_level(logging.INFO, "kcpvpn.hooks"):
        r.run(
            "connected",
            client_id="a",
            interface="kvs0",
            client_ip="10.0.0.2",
            ip_mode=0,
            remote_addr="1.2.3.4:5",
        )
        assert r.wait(30)
    rec = [x for x in caplog.records if "on_connected" in x.getMessage()]
    assert rec and rec[0].levelno == logging.WARNING
    msg = rec[0].getMessage()
    assert "status 3" in msg and "hello from hook" in msg and "oops" in msg


def test_output_is_bounded(tmp_path):
    hook = script(tmp_path / "chatty", "head -c 200000 /dev/zero | tr '\\0' x\n")
    r = run_hook(hook, {"PATH": os.environ["PATH"]}, timeout=30, output_limit=1000)
    assert r.returncode == 0 and not r.timed_out
    assert r.output == b"x" * 1000
    assert r.output_dropped == 199000


def test_unrunnable_hook_reports_why(tmp_path):
    hook = tmp_path / "nobang"
    hook.write_bytes(b"\x00\x01garbage")
    hook.chmod(0o755)
    r = run_hook(hook, {}, timeout=10)
    assert r.returncode is None and b"cannot run" in r.output


def test_timeout_kills_the_whole_process_group(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks, "KILL_GRACE", 0.2)
    pids = tmp_path / "pids"
    # The hook starts a child, then both ignore SIGTERM: only SIGKILL works.
    hook = script(
        tmp_path / "hang",
        f"trap '' TERM\nsleep 1000 &\necho $$ $! > {pids}.tmp\nmv {pids}.tmp {pids}\nwait\n",
    )
    r = run_hook(hook, {"PATH": os.environ["PATH"]}, timeout=0.5)
    assert r.timed_out
    assert r.returncode == -signal.SIGKILL
    leader, child = (int(x) for x in pids.read_text().split())
    end = time.monotonic() + 10
    while alive(child) and time.monotonic() < end:
        time.sleep(0.01)
    assert not alive(leader) and not alive(child)


def test_background_child_holding_stdout_does_not_hold_the_hook(tmp_path):
    pidfile = tmp_path / "bg"
    hook = script(tmp_path / "bg_hook", f"sleep 1000 &\necho $! > {pidfile}\nexit 0\n")
    try:
        r = run_hook(hook, {"PATH": os.environ["PATH"]}, timeout=20)
        # Had it waited for the pipe to close, it would have timed out.
        assert not r.timed_out and r.returncode == 0
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_run_returns_before_the_hook_finishes(hook_dir, tmp_path):
    go = tmp_path / "go"
    done = tmp_path / "done"
    script(
        hook_dir / "on_connected",
        f"i=0; while [ ! -e {go} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n"
        f"touch {done}\n",
    )
    r = HookRunner(hook_dir)
    r.run(
        "connected",
        client_id="",
        interface="kvs0",
        client_ip=None,
        ip_mode=0,
        remote_addr="1.2.3.4:5",
    )
    # The hook is waiting for `go`, which only this thread creates: run()
    # must have returned while it is still running.
    assert r.busy and not done.exists()
    go.touch()
    assert r.wait(30)
    assert done.exists() and not r.busy


def test_hooks_of_one_client_run_in_order(hook_dir, tmp_path):
    log = tmp_path / "order"
    script(hook_dir / "on_connected", f"sleep 0.3; echo connected >> {log}\n")
    script(hook_dir / "on_disconnected", f"echo disconnected >> {log}\n")
    r = HookRunner(hook_dir)
    kw = dict(client_id="site1", interface="kvs0", client_ip=None, ip_mode=0, remote_addr="x:1")
    r.run("connected", **kw)
    r.run("disconnected", **kw)
    assert r.wait(30)
    assert log.read_text().split() == ["connected", "disconnected"]


def test_hooks_of_different_clients_do_not_wait_for_each_other(hook_dir, tmp_path):
    go = tmp_path / "go"
    script(
        hook_dir / "on_slow_connected",
        f"i=0; while [ ! -e {go} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n",
    )
    script(hook_dir / "on_fast_connected", f"touch {go}\n")
    r = HookRunner(hook_dir)
    kw = dict(interface="kvs0", client_ip=None, ip_mode=0, remote_addr="x:1")
    results = []
    r.on_result = lambda ev, ctx, res: results.append((ctx.client_id, res.timed_out))
    r.run("connected", client_id="slow", **kw)
    r.run("connected", client_id="fast", **kw)
    assert r.wait(30)
    # "slow" only finishes because "fast" ran beside it and created `go`.
    assert sorted(results) == [("fast", False), ("slow", False)]
    assert go.exists()


def test_client_hooks_run_given_paths(tmp_path):
    out = tmp_path / "out"
    on = script(tmp_path / "up", f'echo "up $KV_CLIENT_IP $KV_REMOTE_ADDR" >> {out}\n')
    off = script(tmp_path / "down", f'echo "down $KV_VNI_INTERFACE_NAME" >> {out}\n')
    h = ClientHooks(str(on), str(off))
    kw = dict(client_id="me", interface="kvc0", ip_mode=0, remote_addr=("10.0.0.1", 1235))
    assert h.run("connected", client_ip="192.168.88.2", **kw) == on
    assert h.run("disconnected", client_ip="192.168.88.2", **kw) == off
    assert h.wait(30)
    assert out.read_text().splitlines() == ["up 192.168.88.2 10.0.0.1:1235", "down kvc0"]
    assert ClientHooks(None, None).run("connected", client_ip=None, **kw) is None


def test_client_hook_that_vanished_is_not_run(tmp_path, caplog):
    gone = tmp_path / "gone"
    h = ClientHooks(str(gone))
    with caplog.at_level(logging.ERROR, "kcpvpn.hooks"):
        assert (
            h.run(
                "connected",
                client_id="",
                interface="kvc0",
                client_ip=None,
                ip_mode=0,
                remote_addr="x:1",
            )
            is None
        )
    assert "not an executable regular file" in caplog.text


def test_stop_ends_hooks_that_outlive_the_grace(tmp_path):
    """A daemon shutting down must not leave a hook (or its children) behind."""
    import time

    from kcpvpn.hooks import ClientHooks

    pidfile = tmp_path / "pids"
    hook = tmp_path / "on_connected"
    hook.write_text(f"#!/bin/sh\nsleep 60 &\necho $$ $! > {pidfile}\nwait\n")
    hook.chmod(0o755)
    h = ClientHooks(str(hook), None, timeout=30)
    h.run(
        "connected",
        client_id="c",
        interface="kvc0",
        client_ip=None,
        ip_mode=0,
        remote_addr=("192.0.2.1", 1),
    )
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "hook did not start"
        time.sleep(0.05)
    pids = [int(x) for x in pidfile.read_text().split()]
    started = time.monotonic()
    h.stop(grace=0.5)
    assert time.monotonic() - started < 10

    def state(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return "gone"

    for pid in pids:
        # Gone, or a zombie waiting for whoever inherited it: not running.
        # (A killed process may take a moment to finish exiting.)
        deadline = time.monotonic() + 3
        while state(pid) not in ("gone", "Z", "X") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state(pid) in ("gone", "Z", "X"), f"process {pid} of the hook survived stop()"
