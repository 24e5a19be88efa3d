"""Real processes inside a namespace: started with `ip netns exec`, output to a
log file, stopped by PID (SIGTERM, then SIGKILL after a bound)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def lab_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for processes in the lab: ours, with this Python's bin
    directory first on PATH so `kcpvpn` and friends from the venv are found."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if extra:
        env.update(extra)
    return env


class HostProcess:
    """A process started by `Host.popen`; `ip netns exec` execs the command, so
    `pid` is the command's own PID."""

    def __init__(
        self,
        ns: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ):
        self.ns = ns
        self.argv = list(argv)
        self.log_path = log_path
        full_env = lab_env(env)
        self._log = open(log_path, "ab")  # noqa: SIM115 — closed in stop()
        self._popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            # Own session: a Ctrl-C in the terminal reaches the lab, which then
            # stops its processes in order, instead of every process at once.
            start_new_session=True,
        )
        self.pid = self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises subprocess.TimeoutExpired after `timeout` seconds."""
        return self._popen.wait(timeout)

    def send_signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        try:
            if self.alive():
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self._popen.wait(5)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
        return self._popen.poll()

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Poll the log until `text` appears or the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive():
                return text in self.log()
            time.sleep(0.05)
        return False

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.returncode}"
        return f"<HostProcess {self.argv[0]} pid={self.pid} ns={self.ns} {state}>"
