"""`kcpvpn._engine.testing`: the protocol machinery one piece at a time (KCP,
FEC, packet protection, the raw handshake) for tests, lab tools and
experiments. These hand raw keys and wire bytes to Python; the daemon never
imports them. Errors are the classes of `kcpvpn.errors`.
"""

from typing import Self, final

# --- crypto ---
# Packet protection, secret stretching and the handshake (kcpvpn-crypto).
# These hand raw keys to Python: for tests, lab tools and experiments. The
# daemon's data path keeps its keys native (kcpvpn._engine.Endpoint).
#
# Cipher names: "aes" (AES-256-GCM, default), "aes-128", "chacha20", "none".
# The original's other names (aes-192, salsa20, blowfish, ...) raise
# UnsupportedCipher naming the supported choices.
#
# Handshake payload dict (HandshakeInitiator), keys:
#   client_id: str      0..16 chars of A-Za-z0-9_- (default "")
#   mtu: int            the client's interface MTU (required)
#   ip_mode: int        0 server assigns (default), 1 client sets `ip`, 2 none
#   ip: str | None      the wanted address, exactly when ip_mode == 1
#   fec: tuple[int, int] | None   the client's sending FEC (data, parity)
#   cipher: str         data cipher both sides must use (default "aes")
#   udp_mtu: int        largest UDP payload the client offers (default 1350)
#   keepalive: int      the client's keepalive period, s (default 10)
# Request dict (HandshakeResponder.read_init): the payload keys above plus
#   sender_id: int (the client's receive session id), timestamp_ms: int.
# Server configuration dict (PendingAccept.accept, outcome["config"]):
#   tap: bool (default False), mtu: int, full_frame_mtu: int (required),
#   server_ip: str | None, client_ip: str | None, prefixlen: int | None,
#   fec: tuple[int, int] | None   the server's sending FEC
#   udp_mtu: int, keepalive: int  the agreed UDP MTU and keepalive (defaults 1350, 10)
# Outcome dict (HandshakeInitiator.read_response):
#   accepted: bool, reason: str ("" when accepted), config: dict | None,
#   server_session_id: int | None, send_key: bytes | None, recv_key: bytes | None
# Errors (kcpvpn.errors): Truncated, Malformed, Replayed, TooOld,
# AuthenticationFailed, CounterExhausted, StaleHandshake, ReplayedHandshake,
# Busy, AlreadyUsed, InvalidParameter; each message says why.

@final
class Sealer:
    """Seals datagrams for one direction: header(16) ‖ ciphertext ‖ tag(16)."""

    def __new__(cls, kind_name: str, key: bytes, receiver_id: int) -> Self: ...
    def seal(self, plaintext: bytes, msg_type: int = ...) -> bytes:
        """msg_type 3 = data, 4 = close, 6 = feedback, 7 = probe. CounterExhausted at the end."""
    @property
    def counter(self) -> int:
        """The counter the next datagram will carry."""
    def stats(self) -> dict[str, int]: ...

@final
class Opener:
    """Opens datagrams for one direction, with a replay window of 8128 counters."""

    def __new__(cls, kind_name: str, key: bytes) -> Self: ...
    def open(self, datagram: bytes) -> bytes:
        """The plaintext; Truncated, Malformed, Replayed, TooOld or AuthenticationFailed."""
    def open_message(self, datagram: bytes) -> tuple[int, int, bytes]:
        """(msg_type, counter, plaintext)."""
    def stats(self) -> dict[str, int]:
        """sealed, opened, auth_failures, replays, too_old, truncated, bad_type."""

def peek_header(datagram: bytes) -> tuple[int, int, int] | None:
    """(msg_type, receiver_id, counter) of a data/close datagram, else None."""

def cipher_name(name: str) -> str:
    """Canonical cipher name; UnsupportedCipher naming the choices otherwise."""

def stretch_secret(secret: bytes, network: str = ...) -> bytes:
    """Argon2id(secret, salt of `network`) → 32-byte PSK (64 MiB, 3 passes;
    releases the GIL)."""

@final
class HandshakeInitiator:
    """Client side of one handshake attempt."""

    def __new__(
        cls, psk: bytes, payload: dict[str, object], session_id: int, now_ms: int
    ) -> Self: ...
    @property
    def message(self) -> bytes:
        """Message 1, to send to the server."""
    def read_response(self, datagram: bytes) -> dict[str, object] | None:
        """None if not an answer to this attempt; else the outcome dict.

        Raises AuthenticationFailed if the answer is forged or from another secret."""

@final
class PendingAccept:
    """A verified message 1 awaiting a decision; answer once (AlreadyUsed after)."""

    @property
    def sender_id(self) -> int: ...
    def accept(self, config: dict[str, object], session_id: int) -> tuple[bytes, dict[str, bytes]]:
        """(message 2, {"send_key": ..., "recv_key": ...}) for the server."""
    def refuse(self, reason: str) -> bytes:
        """Message 2 carrying the reason (clipped to 200 bytes)."""

@final
class HandshakeResponder:
    """Server side: verifies message 1 statelessly; remembers recent ones to refuse replays."""

    def __new__(cls, psk: bytes, max_age_ms: int = ..., replay_capacity: int = ...) -> Self: ...
    def read_init(
        self, datagram: bytes, now_ms: int
    ) -> tuple[dict[str, object], PendingAccept]: ...
    def stats(self) -> dict[str, int]:
        """requests, auth_failures, malformed, stale, replayed, busy."""

# --- FEC ---
# Reed-Solomon FEC over groups of datagrams (kcpvpn-fec); wire format in
# docs/protocol.md section 4. For tests, lab tools and experiments: the
# daemon's data path uses the Rust types directly. Shard counts must be
# 1..255 data and >= 1 parity, at most 256 in all (InvalidParameter otherwise;
# "FEC off" means not using these classes at all).

FEC_HEADER_LEN: int  # seqid u32 + type u16 = 6
FEC_OVERHEAD: int  # bytes a data shard adds to its datagram = 8

@final
class FecEncoder:
    """Datagrams in, FEC shards out."""

    def __new__(cls, data_shards: int, parity_shards: int, max_datagram: int = 1500) -> Self: ...
    def encode(self, datagram: bytes) -> list[bytes]:
        """The data shard, then the group's parity shards if it is now full.
        InvalidParameter if the datagram is longer than max_datagram."""
    def flush_partial(self) -> list[bytes]:
        """Rapid FEC: parity for the partial group, closing it ([] if none)."""
    def has_partial(self) -> bool: ...
    def stats(self) -> dict[str, int]:
        """data_shards, parity_shards, partial_groups, oversize."""

@final
class FecDecoder:
    """FEC shards in, each original datagram out exactly once."""

    def __new__(cls, data_shards: int, parity_shards: int, max_open_groups: int = ...) -> Self: ...
    def input(self, shard: bytes) -> list[bytes]:
        """Datagrams this shard makes deliverable (its own, or rebuilt ones).
        Duplicates and stale shards give []; Truncated / Malformed otherwise."""
    def stats(self) -> dict[str, int]:
        """data_received, parity_received, delivered, recovered, duplicates,
        stale, malformed, evicted_incomplete."""

# --- KCP ---
# One KCP conversation (kcpvpn-kcp), message mode, wire-compatible with the
# reference C KCP (ikcp.c). Time is milliseconds, taken modulo 2**32.
# Modes (nodelay, interval ms, resend, nc): normal 0,40,2,1 · fast 0,30,2,1 ·
# fast2 1,20,2,1 · fast3 1,10,2,1 · manual (all four keywords required).
# Errors: Truncated / Malformed for bad input, InvalidParameter for bad use
# (each says what was wrong: "truncated KCP datagram ...", "message of N bytes ...").
# stats() keys: messages_sent, messages_recv, datagrams_out, datagrams_in,
# segments_sent, segments_recv, retransmits, fast_retransmits,
# unneeded_retransmits, dup_segments,
# out_of_window, acks_sent, acks_recv, probes_sent, probes_recv, wins_sent,
# input_errors, srtt, rttvar, rto, cwnd, ssthresh, rmt_wnd, snd_queue,
# snd_inflight, rcv_queue, rcv_buf.

@final
class Kcp:
    def __new__(
        cls,
        conv: int,
        mode: str = "fast",
        *,
        nodelay: bool | None = None,
        interval: int | None = None,
        resend: int | None = None,
        nc: bool | None = None,
        sndwnd: int = 1024,
        rcvwnd: int = 1024,
        mtu: int = 1400,
        ack_nodelay: bool = False,
        dead_link: int = 20,
    ) -> Self: ...
    def send(self, msg: bytes) -> None:
        """Queue one message (up to max_message bytes)."""
    def input(self, datagram: bytes, now_ms: int) -> None:
        """Take one datagram from the peer."""
    def update(self, now_ms: int) -> list[bytes]:
        """Datagrams to send if the interval tick or a retransmission is due."""
    def flush(self, now_ms: int) -> list[bytes]:
        """Everything due now (ACKs, probes, retransmissions, new data), at once."""
    def check(self, now_ms: int) -> int:
        """When update must be called next (ms modulo 2**32; at most one interval ahead)."""
    def recv(self) -> bytes | None:
        """The next whole message, or None."""
    def peek_size(self) -> int | None: ...
    def wait_snd(self) -> int:
        """Segments queued or in flight."""
    def is_dead(self) -> bool:
        """True once a segment was transmitted dead_link times."""
    def stats(self) -> dict[str, int]: ...
    @property
    def conv(self) -> int: ...
    @property
    def mss(self) -> int:
        """Payload bytes per segment (mtu - 24)."""
    @property
    def max_message(self) -> int:
        """min(255, rcvwnd) * mss."""
    @staticmethod
    def conv_of(datagram: bytes) -> int | None: ...
