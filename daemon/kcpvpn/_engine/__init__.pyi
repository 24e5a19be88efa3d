"""The native data plane, `kcpvpn._engine` (built from daemon/crates/engine).

This is the production surface the daemons use: the data path (`Endpoint`),
its settings (`SessionParams`) and the bounds and defaults every flag takes
from here, the control plane's value types, the events and the counters.
The protocol pieces one at a time live in `kcpvpn._engine.testing`.
Errors are the classes of `kcpvpn.errors`.
"""

from typing import Any, Final, Literal, Self, TypeAlias, final

from . import testing as testing

__version__: str

# --- bounds and defaults (the one owner of each; config.py reads them) ------

UDP_MTU_RANGE: Final[tuple[int, int]]
# Bytes fake TCP adds over a UDP datagram (TCP header, frame length).
TCP_EXTRA_OVER_UDP: Final[int]
"""Largest UDP payload either side may set: 576 .. 8972 (9000 minus IPv4 and UDP)."""
VNI_MTU_RANGE: Final[tuple[int, int]]
IPV6_MIN_MTU: Final[int]
FRAME_MTU_MAX: Final[int]
FRAME_HEADROOM: Final[int]
"""The default full-frame MTU is the interface MTU plus this."""
WINDOW_RANGE: Final[tuple[int, int]]
FEC_MAX_SHARDS: Final[int]
KEEPALIVE_RANGE: Final[tuple[int, int]]
REKEY_INTERVAL_RANGE: Final[tuple[int, int]]
IDLE_KEEPALIVES: Final[int]
"""A peer silent for this many keepalive periods (plus a second) is gone."""
INTERVAL_RANGE: Final[tuple[int, int]]
RESEND_MAX: Final[int]
BUFFER_RANGE: Final[tuple[int, int]]
DSCP_MAX: Final[int]
CLIENT_ID_MAX: Final[int]
DEFAULT_NETWORK: Final[str]
MAX_NETWORK_LEN: Final[int]
IP_UDP_HEADER: Final[int]
DATAGRAM_OVERHEAD: Final[int]
"""Outer header and AEAD tag of each datagram."""
FEC_OVERHEAD: Final[int]
KCP_OVERHEAD: Final[int]
DEFAULT_VNI_MTU: Final[int]
DEFAULT_SOCKBUF: Final[int]
KCP_MODES: Final[list[str]]
KCP_PROFILES: Final[dict[str, tuple[int, int, int, int]]]
"""name -> (nodelay, interval ms, resend, nc)."""
CONGESTION: Final[list[str]]
CIPHERS: Final[dict[str, str]]
"""name -> what it is."""
LEGACY_CIPHERS: Final[list[str]]
"""The original's unauthenticated ciphers, refused by name."""
IP_MODES: Final[dict[str, int]]
"""server (assigns), client (asks for its --local-ip), none."""
FEC_FULL_GROUP_FAILURE: Final[float]
FEC_PARTIAL_GROUP_FAILURE: Final[float]
RAPID_SPARSE_DELAY_MS: Final[int]
CODEL_TARGET_MS: Final[int]
CODEL_INTERVAL_MS: Final[int]

@final
class SessionParams:
    """One side's transport settings, with the engine's defaults. Every value is
    checked on construction (InvalidParameter / UnsupportedCipher naming the flag)."""

    def __new__(
        cls,
        *,
        kcp_mode: str = ...,
        sndwnd: int = ...,
        rcvwnd: int = ...,
        datashard: int = ...,
        parityshard: int = ...,
        rapid_fec: bool = ...,
        congestion: str = ...,
        unordered: bool = ...,
        crypt: str = ...,
        keepalive: int = ...,
        udp_mtu: int = ...,
        smuxbuf: int = ...,
        sockbuf: int = ...,
        mss_clamp: bool = ...,
        flow_queueing: bool = ...,
        rekey_interval: int = ...,
        acknodelay: bool = ...,
        nodelay: int = ...,
        interval: int = ...,
        resend: int = ...,
        nc: int = ...,
    ) -> Self: ...
    @property
    def kcp_mode(self) -> str: ...
    @property
    def kcp_profile(self) -> tuple[int, int, int, int]:
        """(nodelay, interval ms, resend, nc) of the mode."""
    @property
    def sndwnd(self) -> int: ...
    @property
    def rcvwnd(self) -> int: ...
    @property
    def fec(self) -> tuple[int, int] | None:
        """(data, parity) shards; None when FEC is off."""
    @property
    def rapid_fec(self) -> bool: ...
    @property
    def congestion(self) -> str: ...
    @property
    def unordered(self) -> bool: ...
    @property
    def crypt(self) -> str: ...
    @property
    def keepalive(self) -> int: ...
    @property
    def udp_mtu(self) -> int: ...
    @property
    def smuxbuf(self) -> int: ...
    @property
    def sockbuf(self) -> int: ...
    @property
    def mss_clamp(self) -> bool: ...
    @property
    def flow_queueing(self) -> bool: ...
    @property
    def rekey_interval(self) -> int:
        """Seconds between key updates."""
    @property
    def acknodelay(self) -> bool: ...
    @property
    def idle_timeout(self) -> float:
        """Seconds of silence after which a peer is gone."""

# --- the control plane's value types ----------------------------------------

@final
class Psk:
    """The shared secret stretched with Argon2id, salted with the network name
    (opaque; computed once, GIL released). InvalidParameter if it is empty or
    the name is not 1..64 bytes without control characters."""

    def __new__(cls, secret: bytes, network: str = ...) -> Self: ...

def generate_private_key() -> bytes:
    """A new X25519 private key (32 random bytes)."""

def public_key(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (InvalidParameter otherwise)."""

@final
class Offer:
    """What the server offers a client it accepts (FEC, UDP MTU and keepalive are
    settled by the engine). InvalidParameter if an address or prefix is wrong."""

    def __new__(
        cls,
        *,
        mtu: int,
        full_frame_mtu: int,
        tap: bool = False,
        server_ip: str | None = None,
        client_ip: str | None = None,
        prefixlen: int | None = None,
    ) -> Self: ...
    @property
    def tap(self) -> bool: ...
    @property
    def mtu(self) -> int: ...
    @property
    def full_frame_mtu(self) -> int: ...
    @property
    def server_ip(self) -> str | None: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def prefixlen(self) -> int | None: ...

@final
class TunnelConfig:
    """The tunnel as the server set it up for this client."""

    @property
    def tap(self) -> bool: ...
    @property
    def mtu(self) -> int: ...
    @property
    def full_frame_mtu(self) -> int: ...
    @property
    def server_ip(self) -> str | None: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def prefixlen(self) -> int | None: ...
    @property
    def fec(self) -> tuple[int, int] | None: ...
    @property
    def udp_mtu(self) -> int: ...
    @property
    def keepalive(self) -> int: ...

# --- events -----------------------------------------------------------------

@final
class HandshakeRequest:
    """Server: an authenticated, fresh message 1 (answer with accept or refuse).
    Constructible for tests of the control plane's policy."""

    def __new__(
        cls,
        *,
        pending_id: int,
        peer: tuple[str, int],
        mtu: int,
        client_id: str = ...,
        ip_mode: int = ...,
        ip: str | None = None,
        fec: tuple[int, int] | None = None,
        cipher: str = ...,
        udp_mtu: int = ...,
        keepalive: int = 10,
        timestamp_ms: int = 0,
        client_key: str | None = None,
    ) -> Self: ...
    @property
    def pending_id(self) -> int: ...
    @property
    def peer(self) -> tuple[str, int]: ...
    @property
    def client_id(self) -> str: ...
    @property
    def mtu(self) -> int: ...
    @property
    def ip_mode(self) -> int:
        """0 the server assigns, 1 the client asks for `ip`, 2 none."""
    @property
    def ip(self) -> str | None: ...
    @property
    def fec(self) -> tuple[int, int] | None: ...
    @property
    def cipher(self) -> str: ...
    @property
    def udp_mtu(self) -> int: ...
    @property
    def keepalive(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def client_key(self) -> str | None:
        """Identity mode: the client's public key (base64), one of the peers;
        `client_id` and `ip` then come from its peer entry."""

@final
class HandshakeRejected:
    """Server: a message 1 turned away (rate-limited; `suppressed` since the last)."""

    @property
    def peer(self) -> tuple[str, int]: ...
    @property
    def kind(
        self,
    ) -> Literal["auth", "stale", "replayed", "busy", "unusable", "unknown-peer"]: ...
    @property
    def reason(self) -> str: ...
    @property
    def suppressed(self) -> int: ...

@final
class Connected:
    """Client: accepted; set up the interface from `config`, then `attach`."""

    @property
    def session_id(self) -> int: ...
    @property
    def server(self) -> tuple[str, int]: ...
    @property
    def config(self) -> TunnelConfig: ...

@final
class ConnectFailed:
    """Client: the attempt ended without a session."""

    @property
    def kind(self) -> Literal["refused", "auth", "stale", "replayed", "no-answer", "invalid"]: ...
    @property
    def reason(self) -> str: ...
    def error(self) -> Exception:
        """The matching kcpvpn.errors exception (Refused, AuthenticationFailed,
        StaleHandshake, ReplayedHandshake, NoAnswer, InvalidParameter)."""

@final
class SessionUp:
    @property
    def session_id(self) -> int: ...

@final
class SessionConfirmed:
    """Server: an accepted client proved it holds the session's keys: give it
    its interface (attach), replace its older session, run hooks."""

    @property
    def session_id(self) -> int: ...

@final
class SessionClosed:
    @property
    def session_id(self) -> int: ...
    @property
    def kind(
        self,
    ) -> Literal["by-peer", "idle", "local", "replaced", "shutdown", "interface-gone"]: ...
    @property
    def reason(self) -> str: ...

@final
class PeerMoved:
    @property
    def session_id(self) -> int: ...
    @property
    def peer(self) -> tuple[str, int]: ...

@final
class PathMtuProblem:
    """The path drops datagrams of the agreed UDP MTU; `works` bytes got through."""

    @property
    def session_id(self) -> int: ...
    @property
    def configured(self) -> int: ...
    @property
    def works(self) -> int: ...

Event: TypeAlias = (
    HandshakeRequest
    | HandshakeRejected
    | Connected
    | ConnectFailed
    | SessionUp
    | SessionConfirmed
    | SessionClosed
    | PeerMoved
    | PathMtuProblem
)

# --- counters ---------------------------------------------------------------

@final
class EndpointStats:
    @property
    def datagrams_in(self) -> int: ...
    @property
    def datagrams_out(self) -> int: ...
    @property
    def unknown_session(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def oversize(self) -> int: ...
    @property
    def handshake_requests(self) -> int: ...
    @property
    def handshake_failures(self) -> int: ...
    @property
    def handshake_auth_failures(self) -> int: ...
    @property
    def handshake_stale(self) -> int: ...
    @property
    def handshake_replayed(self) -> int: ...
    @property
    def handshake_busy(self) -> int: ...
    @property
    def handshake_unusable(self) -> int: ...
    @property
    def hints_sent(self) -> int: ...
    @property
    def hints_suppressed(self) -> int: ...
    @property
    def unanswerable_sources(self) -> int: ...
    @property
    def handshake_rate_limited(self) -> int: ...
    @property
    def cookies_sent(self) -> int: ...
    @property
    def cookies_valid(self) -> int: ...
    @property
    def no_session_hints_sent(self) -> int: ...
    @property
    def no_session_hints_in(self) -> int: ...
    @property
    def reject_hints_in(self) -> int: ...
    @property
    def rehandshakes(self) -> int: ...
    @property
    def rehandshake_failures(self) -> int: ...
    @property
    def handshake_attempts(self) -> int: ...
    @property
    def forged_answers(self) -> int: ...
    @property
    def tun_write_drops(self) -> int: ...
    @property
    def tun_offload_interfaces(self) -> int: ...
    @property
    def tun_interfaces(self) -> int: ...
    @property
    def tun_gso_reads(self) -> int: ...
    @property
    def tun_gso_segments(self) -> int: ...
    @property
    def tun_bad_reads(self) -> int: ...
    @property
    def tun_merged_writes(self) -> int: ...
    @property
    def tun_merged_segments(self) -> int: ...
    @property
    def gso_messages(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    @property
    def send_errors_full(self) -> int: ...
    @property
    def send_errors_unreachable(self) -> int: ...
    @property
    def send_errors_refused(self) -> int: ...
    @property
    def send_errors_too_big(self) -> int: ...
    @property
    def send_errors_bad_address(self) -> int: ...
    @property
    def send_errors_other(self) -> int: ...
    @property
    def recv_errors(self) -> int: ...
    @property
    def tcp_connects(self) -> int: ...
    @property
    def tcp_reconnects(self) -> int: ...
    @property
    def tcp_resets_in(self) -> int: ...
    @property
    def tcp_syns_out(self) -> int: ...
    @property
    def tcp_syns_in(self) -> int: ...
    @property
    def tcp_probes_out(self) -> int: ...
    @property
    def tcp_bad(self) -> int: ...
    @property
    def tcp_stray(self) -> int: ...
    @property
    def tcp_out_of_window(self) -> int: ...
    @property
    def tcp_no_connection(self) -> int: ...
    @property
    def tcp_table_full(self) -> int: ...
    @property
    def tcp_connections(self) -> int: ...
    @property
    def tcp_pending_dropped(self) -> int: ...
    @property
    def tcp_merged_in(self) -> int: ...
    @property
    def tcp_offload_out(self) -> int: ...
    @property
    def sessions(self) -> int: ...
    @property
    def sessions_started(self) -> int: ...
    @property
    def loop_iterations(self) -> int: ...
    def to_dict(self) -> dict[str, int]: ...

@final
class KcpStats:
    @property
    def segments_sent(self) -> int: ...
    @property
    def segments_recv(self) -> int: ...
    @property
    def retransmits(self) -> int: ...
    @property
    def fast_retransmits(self) -> int: ...
    @property
    def unneeded_retransmits(self) -> int: ...
    @property
    def dup_segments(self) -> int: ...
    @property
    def out_of_window(self) -> int: ...
    @property
    def input_errors(self) -> int: ...
    @property
    def srtt_ms(self) -> int: ...
    @property
    def rttvar_ms(self) -> int: ...
    @property
    def rto_ms(self) -> int: ...
    @property
    def cwnd(self) -> int: ...
    @property
    def rmt_wnd(self) -> int: ...
    @property
    def snd_queue(self) -> int: ...
    @property
    def snd_inflight(self) -> int: ...
    @property
    def rcv_queue(self) -> int: ...
    @property
    def rcv_buf(self) -> int: ...
    @property
    def min_rtt_ms(self) -> int: ...
    @property
    def bandwidth_kbit(self) -> int: ...
    @property
    def cc_restarts(self) -> int: ...
    @property
    def early_deliveries(self) -> int: ...
    @property
    def cc_queue_corrections(self) -> int: ...
    @property
    def cc_queue_drains(self) -> int: ...
    @property
    def cc_trim_pct(self) -> int: ...
    def to_dict(self) -> dict[str, int]: ...

@final
class SessionStats:
    @property
    def session_id(self) -> int: ...
    @property
    def peer(self) -> tuple[str, int]: ...
    @property
    def attached(self) -> bool: ...
    @property
    def packets_in(self) -> int: ...
    @property
    def packets_out(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def datagrams_in(self) -> int: ...
    @property
    def datagrams_out(self) -> int: ...
    @property
    def wire_bytes_in(self) -> int: ...
    @property
    def wire_bytes_out(self) -> int: ...
    @property
    def auth_failures(self) -> int: ...
    @property
    def replays(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def keepalives_in(self) -> int: ...
    @property
    def keepalives_out(self) -> int: ...
    @property
    def rapid_fec_flushes(self) -> int: ...
    @property
    def sparse_markers(self) -> int: ...
    @property
    def fec_parity(self) -> float: ...
    @property
    def fec_loss_ppm(self) -> int: ...
    @property
    def feedback_in(self) -> int: ...
    @property
    def feedback_out(self) -> int: ...
    @property
    def fec_recovered(self) -> int: ...
    @property
    def parity_out(self) -> int:
        """FEC parity shards sent."""
    @property
    def protected_groups(self) -> int:
        """Full FEC groups that carried interactive traffic and got strict parity."""
    @property
    def small_groups(self) -> int:
        """Full FEC groups of small datagrams (ACKs) given parity for a 1% failure target."""
    @property
    def heap_bytes(self) -> int:
        """Heap bytes the session's buffers hold (they shrink when it idles)."""
    @property
    def queued_bytes(self) -> int: ...
    @property
    def codel_drops(self) -> int: ...
    @property
    def ecn_marks(self) -> int: ...
    @property
    def overflow_drops(self) -> int: ...
    @property
    def queue_delay_ms(self) -> int: ...
    @property
    def max_queue_delay_ms(self) -> int:
        """The longest a packet waited in the flow queues in about the last second."""
    @property
    def new_flows(self) -> int: ...
    @property
    def flow_waits(self) -> int:
        """Messages that waited for an earlier one of their own flow."""
    @property
    def offload(self) -> bool:
        """Its interface offloads (TSO reads, merged writes)."""
    @property
    def fec_errors(self) -> int: ...
    @property
    def kcp_errors(self) -> int: ...
    @property
    def oversize_packets(self) -> int: ...
    @property
    def peer_expected(self) -> int: ...
    @property
    def peer_lost(self) -> int: ...
    @property
    def loss_ppm(self) -> int:
        """The loss the peer measured in its reports of the last 5-10 s, ppm."""
    @property
    def probes_out(self) -> int: ...
    @property
    def probes_acked(self) -> int: ...
    @property
    def path_mtu(self) -> int: ...
    @property
    def key_epoch(self) -> int: ...
    @property
    def rekeys(self) -> int: ...
    @property
    def rekey_ignored(self) -> int: ...
    @property
    def unknown_key_phase(self) -> int: ...
    @property
    def kcp(self) -> KcpStats: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class EngineStats:
    @property
    def endpoint(self) -> EndpointStats: ...
    @property
    def sessions(self) -> list[SessionStats]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def session(self, session_id: int) -> SessionStats | None: ...

# --- the data path ----------------------------------------------------------

@final
class Endpoint:
    """One native thread: a UDP socket, the sessions and their interfaces."""

    @staticmethod
    def server(
        fd: int,
        psk: Psk,
        params: SessionParams,
        handshake_max_age_ms: int = ...,
        *,
        private_key: bytes | None = None,
        peers: list[tuple[bytes, str, str | None]] = ...,
    ) -> Endpoint:
        """A server on `fd` (a bound UDP socket, dup'ed for the engine). Identity
        mode with `private_key`: only `peers` (public key, client id, fixed
        address or None) get in, each named by its entry."""
    @staticmethod
    def client(
        fd: int,
        psk: Psk,
        params: SessionParams,
        *,
        private_key: bytes | None = None,
        server_public_key: bytes | None = None,
    ) -> Endpoint:
        """A client on `fd` (its UDP socket, dup'ed for the engine); identity
        mode with its private key and the server's public key it pins."""
    @staticmethod
    def server_tcp(
        port: int,
        psk: Psk,
        params: SessionParams,
        *,
        ipv4: bool = True,
        ipv6: bool = True,
        dscp: int = 0,
        sockbuf: int = ...,
        handshake_max_age_ms: int = ...,
        private_key: bytes | None = None,
        peers: list[tuple[bytes, str, str | None]] = ...,
    ) -> Endpoint:
        """A fake-TCP server on `port` (raw sockets of the families asked for)."""
    @staticmethod
    def client_tcp(
        server: tuple[str, int],
        psk: Psk,
        params: SessionParams,
        *,
        dscp: int = 0,
        sockbuf: int = ...,
        private_key: bytes | None = None,
        server_public_key: bytes | None = None,
    ) -> Endpoint:
        """A fake-TCP client of `server`."""
    def event_fd(self) -> int:
        """Readable when events wait."""
    def is_running(self) -> bool: ...
    def events(self) -> list[Event]: ...
    def connect(
        self,
        server: tuple[str, int],
        *,
        mtu: int,
        client_id: str = ...,
        ip_mode: int = ...,
        ip: str | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Client: message 1 now and every second until answered (at most
        `max_attempts`, or forever); Connected or ConnectFailed follows."""
    def cancel_connect(self) -> None: ...
    def attach(self, session_id: int, tun_fd: int) -> None:
        """The interface of a session (a dup'ed descriptor): client, once
        connected; server, once confirmed."""
    def accept(self, request: HandshakeRequest, offer: Offer, tun_fd: int | None = None) -> int:
        """Server: answers and starts the session; returns its id. Without
        tun_fd the interface comes with attach, after SessionConfirmed.
        NotPending if the request expired; EngineError if the session cannot
        run (the client was told why)."""
    def refuse(self, request: HandshakeRequest, reason: str) -> None: ...
    def set_peers(self, private_key: bytes, peers: list[tuple[bytes, str, str | None]]) -> None:
        """Server in identity mode: replaces the peers (the same private key);
        sessions of peers that are gone stay until closed."""
    def close(self, session_id: int) -> None: ...
    def stats(self) -> EngineStats:
        """The counters (refreshed every 250 ms)."""
    def stop(self) -> None:
        """Stops the data path; each session says goodbye first."""
