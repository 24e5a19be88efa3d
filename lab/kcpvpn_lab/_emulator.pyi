"""Type stubs for the lab's native module `kcpvpn_lab._emulator` (built from
lab/native/bindings over the kcpvpn-emulator crate in lab/native/emulator)."""

__version__: str

EMULATOR_PARAMS: list[str]
"""Impairment names accepted by LinkEmulator (delay_ms, jitter_ms, loss, burst_enter,
burst_exit, burst_loss, rate_mbit, queue_bytes, reorder, reorder_ms, duplicate, limit).
Probabilities are fractions in [0, 1]; missing keys are off."""

class LinkEmulator:
    """Layer-2 link emulator bridging two interfaces of the current network namespace
    (AF_PACKET, one native thread per direction; the GIL is not held while it runs)."""

    def __init__(
        self,
        if_a: str,
        if_b: str,
        a_to_b: dict[str, float] | None = None,
        b_to_a: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        """ValueError if an impairment is unknown or out of range."""
    def start(self) -> None:
        """Open both interfaces and start forwarding; OSError naming the interface on failure."""
    def stop(self) -> None:
        """Stop and join the threads (frames still held are discarded). Idempotent."""
    def set(self, direction: str, params: dict[str, float]) -> None:
        """Replace the impairments of "a_to_b" or "b_to_a" (a full set), live."""
    def stats(self) -> dict[str, object]:
        """{"a_to_b": {...}, "b_to_a": {...}, "running": bool, "error": str | None}; per direction:
        rx_frames, rx_bytes, tx_frames, tx_bytes, dropped_loss, dropped_burst, dropped_queue,
        dropped_limit, delayed, reordered, duplicated, queued, rx_oversize, tx_errors."""
    @property
    def running(self) -> bool: ...
    @property
    def error(self) -> str | None:
        """Why forwarding stopped on its own (e.g. an interface disappeared), if it did."""

class LoadDriver:
    """N real client sessions in one process (`kcpvpn lab load`): the product's client
    endpoint per client, each with its own UDP socket bound to one of `sources` in turn
    (the sockets live in the namespace current at construction). Native thread; nothing
    is sent before connect()."""

    def __init__(
        self,
        server: str,
        sources: list[str],
        clients: int,
        secret: bytes,
        id_prefix: str = "load",
        seed: int = 0,
    ) -> None:
        """server: "IP:PORT". ValueError for a bad address; OSError if a socket cannot
        be bound (the source address must be on an interface)."""
    def connect(self) -> None:
        """Every client without a session connects; connect_ms counts from now."""
    def ping(self) -> None:
        """One ICMP echo request from every connected client to the server's tunnel address."""
    def close(self) -> None:
        """Every client says goodbye and stops connecting."""
    def report(self) -> dict[str, object]:
        """clients, connected, connects, first_connect_ms, last_connect_ms, connect_ms
        (sorted), handshake_attempts, cookies_in, failures [(reason, n)], pings_sent,
        pings_answered, ping_ms (sorted), closed [(reason, n)], datagrams_in,
        datagrams_out, send_errors, other_packets, error."""
    @property
    def running(self) -> bool: ...
    def stop(self) -> None:
        """Stops the thread (no goodbyes: close() first for those). Idempotent."""
