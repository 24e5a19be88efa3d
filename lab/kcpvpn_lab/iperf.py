"""iperf3 in lab hosts, with the two traps of iperf 3.11/3.12 closed.

- A client started before its server listens fails to connect; with `-J`
  iperf 3.11/3.12 then exit 0 (esnet/iperf#1405) and print a report whose
  `end` is empty, so a caller reading `end.sum_received` sees a KeyError, not
  the reason. `serve` returns only once the server listens.
- `report` reads a `-J` report and raises with iperf's own error text when it
  has one, whatever the exit code said."""

from __future__ import annotations

import json
import time
from typing import Any

from .process import HostProcess
from .topology import Host

PORT = 5201


def _listening(host: Host, port: int) -> bool:
    r = host.run(["ss", "-Hltn", f"sport = :{port}"], check=False, timeout=5)
    return bool(r.stdout.strip())


def wait_listening(host: Host, port: int = PORT, timeout: float = 5.0) -> None:
    """Returns once something in `host` listens on TCP `port`."""
    deadline = time.monotonic() + timeout
    while not _listening(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"iperf3 -s in {host.name} is not listening on {port} after {timeout} s"
            )
        time.sleep(0.05)


def serve(
    host: Host,
    bind: str | None = None,
    port: int = PORT,
    json_output: bool = False,
    timeout: float = 15.0,
) -> HostProcess:
    """A one-shot `iperf3 -s` in `host`, listening when this returns. Started
    again while it exits at once: a tunnel address it binds to may not be on
    its interface yet when the tunnel has just come up."""
    argv = ["iperf3", "-s", "-1", "-p", str(port)]
    if bind:
        argv += ["-B", bind]
    if json_output:
        argv.append("-J")
    deadline = time.monotonic() + timeout
    proc = host.popen(argv, name="iperf3-s")
    while not _listening(host, port):
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(
                f"iperf3 -s in {host.name} is not listening on {port} after {timeout} s: "
                f"{proc.log()[-300:]}"
            )
        if not proc.alive():
            time.sleep(0.2)
            proc = host.popen(argv, name="iperf3-s")
        time.sleep(0.05)
    return proc


class IperfError(RuntimeError):
    """iperf3 ran but did not measure (its report carries an error)."""


def report(text: str) -> dict[str, Any]:
    """The `-J` report in `text` (output may precede it), checked: raises
    IperfError with iperf's error, or when the summary is missing."""
    start = text.find("{")
    if start < 0:
        raise IperfError(f"iperf3 printed no JSON report: {text[-800:]!r}")
    doc = json.loads(text[start:])
    if doc.get("error"):
        raise IperfError(f"iperf3 failed: {doc['error']}")
    end = doc.get("end", {})
    if "sum_received" not in end and "sum" not in end:
        raise IperfError(f"iperf3 report has no summary (end has {sorted(end)})")
    return doc


def received_mbit(doc: dict[str, Any]) -> float:
    """Goodput at the receiver, Mbit/s."""
    return doc["end"]["sum_received"]["bits_per_second"] / 1e6
