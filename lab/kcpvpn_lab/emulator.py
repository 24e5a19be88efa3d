"""The link emulator as its own process, and the lab's client for it.

Run inside the wan namespace (the lab does this for you):

    python -m kcpvpn_lab.emulator --a c1 --b s0 --params '{"delay_ms": 20, "loss": 0.05}' \
        --seed 1 --control /tmp/emu.sock

It bridges interfaces A and B at layer 2 with the impairments given (the
native `kcpvpn_lab._emulator.LinkEmulator`; its threads release the GIL), and serves
a control socket: one JSON request per connection, one JSON answer:

    {"op": "stats"}                                   → {"ok": true, "stats": {...}}
    {"op": "set", "direction": "a_to_b", "params": {...}} → {"ok": true}

SIGUSR1 writes the counters to --stats-file; SIGTERM/SIGINT stop it (the final
counters are written to --stats-file too). Separate process, because the lab
process forks pyroute2 helpers, which is unsafe once native threads run.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

DIRECTIONS = ("a_to_b", "b_to_a")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _handle(conn: socket.socket, emu: Any) -> None:
    conn.settimeout(2.0)
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    try:
        req = json.loads(buf)
        op = req.get("op")
        if op == "stats":
            answer: dict[str, Any] = {"ok": True, "stats": emu.stats()}
        elif op == "set":
            emu.set(req["direction"], req.get("params") or {})
            answer = {"ok": True}
        else:
            answer = {"ok": False, "error": f"unknown op {op!r}: use 'stats' or 'set'"}
    except (ValueError, KeyError, TypeError) as e:
        answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    conn.sendall(json.dumps(answer).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kcpvpn_lab.emulator", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--a", required=True, help="interface A (e.g. the client side)")
    ap.add_argument("--b", required=True, help="interface B (e.g. the server side)")
    ap.add_argument("--params", default="{}", help="JSON impairments for both directions")
    ap.add_argument("--a-to-b", default=None, help="JSON impairments A→B (overrides --params)")
    ap.add_argument("--b-to-a", default=None, help="JSON impairments B→A (overrides --params)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--control", type=Path, default=None, help="unix socket path for stats/set")
    ap.add_argument(
        "--stats-file", type=Path, default=None, help="counters written here on SIGUSR1 and at exit"
    )
    ap.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="PRIO",
        help="SCHED_FIFO priority for the forwarding threads (0 = normal scheduling, nice -10)",
    )
    args = ap.parse_args(argv)

    # The emulated link should behave like hardware, not like one more busy
    # process: its threads (which inherit this) must wake on time when the
    # machine is loaded, or delays grow by scheduler latency.
    try:
        if args.realtime > 0:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
        else:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError as e:
        print(f"could not raise the scheduling priority: {e}", file=sys.stderr, flush=True)

    from ._emulator import LinkEmulator

    both = json.loads(args.params)
    a_to_b = json.loads(args.a_to_b) if args.a_to_b else both
    b_to_a = json.loads(args.b_to_a) if args.b_to_a else both
    emu = LinkEmulator(args.a, args.b, a_to_b, b_to_a, args.seed)

    flags = {"stop": False, "dump": False}

    def on_stop(signum: int, frame: object) -> None:
        flags["stop"] = True

    def on_dump(signum: int, frame: object) -> None:
        flags["dump"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_dump)

    emu.start()
    if args.realtime > 0:
        # Only the forwarding threads need it; this control thread goes back to normal.
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    server = None
    if args.control:
        args.control.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(args.control))
        server.listen(8)
    print(f"emulator running: {args.a} <-> {args.b} seed={args.seed}", flush=True)
    print(f"a_to_b={json.dumps(a_to_b)} b_to_a={json.dumps(b_to_a)}", flush=True)
    code = 0
    try:
        while not flags["stop"]:
            if flags["dump"] and args.stats_file:
                flags["dump"] = False
                _write_json(args.stats_file, emu.stats())
            if not emu.running:
                print(f"emulator stopped on its own: {emu.error}", file=sys.stderr, flush=True)
                code = 1
                break
            if server is None:
                time.sleep(0.2)
                continue
            ready, _, _ = select.select([server], [], [], 0.2)
            if ready:
                conn, _ = server.accept()
                with conn:
                    try:
                        _handle(conn, emu)
                    except OSError as e:
                        print(f"control connection failed: {e}", file=sys.stderr, flush=True)
    finally:
        final = emu.stats()
        emu.stop()
        if args.stats_file:
            _write_json(args.stats_file, final)
        if server is not None:
            server.close()
            args.control.unlink(missing_ok=True)
        print(f"emulator stopped; counters: {json.dumps(final)}", flush=True)
    return code


class EmulatorClient:
    """Talks to a running emulator process over its control socket."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def request(self, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.path))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        answer = json.loads(buf)
        if not answer.get("ok"):
            raise ValueError(f"emulator refused {req.get('op')!r}: {answer.get('error')}")
        return answer

    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})["stats"]

    def set(self, direction: str, params: dict[str, Any]) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
        self.request({"op": "set", "direction": direction, "params": params})


if __name__ == "__main__":
    sys.exit(main())
