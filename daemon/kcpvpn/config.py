"""Configuration of `kcpvpn server` and `kcpvpn client`: every flag of the
original with its default, our additions, the TOML `--config` file, and the
validation that runs before anything is created.

Precedence, lowest first: built-in defaults < `--config` file < the
`KCPVPN_KEY` environment variable (secret only) < command-line flags.

`FLAGS` is the one table of flags: the command line (cli.py), the config
file keys and the README's flag list all come from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from . import _engine
from .ippool import parse_pool_spec
from .keys import PeerEntry, decode_key, read_private_key, secret_problem, weak_secret_message

Mode = Literal["server", "client"]

SECRET_ENV = "KCPVPN_KEY"


class KcpProfile(NamedTuple):
    nodelay: int
    interval: int  # ms
    resend: int
    nc: int


# Every bound and default of the data plane is the engine's (one owner,
# daemon/crates/tunnel/src/params.rs); this module only names them for the
# flag table and its messages.
# (nodelay, interval ms, resend, nc), as in the original and kcptun.
KCP_PROFILES: dict[str, KcpProfile] = {
    name: KcpProfile(*v) for name, v in _engine.KCP_PROFILES.items()
}
KCP_MODES = tuple(_engine.KCP_MODES)
CONGESTION = tuple(_engine.CONGESTION)
CIPHERS: dict[str, str] = dict(_engine.CIPHERS)
# The original's kcp-go block ciphers: unauthenticated, refused by name.
LEGACY_CIPHERS = tuple(_engine.LEGACY_CIPHERS)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

# Bounds, each with its reason in the engine (the README repeats them).
UDP_MTU_MIN, UDP_MTU_MAX = _engine.UDP_MTU_RANGE  # 8972 = 9000 - IPv4 - UDP headers
VNI_MTU_MIN, VNI_MTU_MAX = _engine.VNI_MTU_RANGE
IPV6_MIN_MTU = _engine.IPV6_MIN_MTU  # RFC 8200: the kernel disables IPv6 on smaller links
FRAME_MTU_MAX = _engine.FRAME_MTU_MAX
FRAME_HEADROOM = _engine.FRAME_HEADROOM  # default full-frame MTU = VNI MTU + this
WND_MIN, WND_MAX = _engine.WINDOW_RANGE  # segments
FEC_MAX_SHARDS = _engine.FEC_MAX_SHARDS  # Reed-Solomon over GF(2^8)
DSCP_MAX = _engine.DSCP_MAX  # 6 bits
BUF_MIN, BUF_MAX = _engine.BUFFER_RANGE
KEEPALIVE_MIN, KEEPALIVE_MAX = _engine.KEEPALIVE_RANGE  # seconds
REKEY_MIN, REKEY_MAX = _engine.REKEY_INTERVAL_RANGE  # seconds
INTERVAL_MIN, INTERVAL_MAX = _engine.INTERVAL_RANGE  # ms, KCP's own clamp
RESEND_MAX = _engine.RESEND_MAX
CLIENT_ID_MAX = _engine.CLIENT_ID_MAX  # bytes
# Each client holds an interface and two descriptors: the default leaves
# room for a site-to-site hub without letting one server exhaust a small VPS.
DEFAULT_MAX_CLIENTS = 2048
MAX_CLIENTS_LIMIT = 65535
IFNAME_MAX = 15  # Linux IFNAMSIZ - 1
PREFIX_MAX = 12  # leaves three digits of counter within IFNAME_MAX
DEFAULT_NETWORK = _engine.DEFAULT_NETWORK
MAX_NETWORK_LEN = _engine.MAX_NETWORK_LEN


# One wording for rapid FEC's delay and the adaptive FEC targets, used by the
# flags' help, the README and the docs alike (a unit test holds them to it).
# The numbers are the engine's: RAPID_SPARSE_DELAY_MS and FULL_GROUP_FAILURE
# (tunnel crate), PARTIAL_GROUP_FAILURE (fec crate).
def _pct(x: float) -> str:
    return f"{x * 100:g}%"


RAPID_FEC_DELAY = (
    "a partial FEC group's parity leaves "
    + ("at once" if _engine.RAPID_SPARSE_DELAY_MS == 0 else f"{_engine.RAPID_SPARSE_DELAY_MS} ms")
    + " after sparse traffic (fewer datagrams "
    "than --ds in the last KCP interval or two) and after one KCP interval otherwise"
)
FEC_TARGETS = (
    "each group gets the fewest parity shards that leave at most "
    f"{_pct(_engine.FEC_FULL_GROUP_FAILURE)} of full groups (on average) and "
    f"{_pct(_engine.FEC_PARTIAL_GROUP_FAILURE)} of the groups rapid FEC closes early to "
    "KCP's retransmission"
)

# The engine's defaults, read once: the flag table shows them and the
# dataclasses below start from them.
_DEFAULTS = _engine.SessionParams()
_MANUAL = _engine.SessionParams(kcp_mode="manual").kcp_profile

_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]*")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class ConfigError(Exception):
    """One or more invalid settings; each line says what is wrong and what
    would be right."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------
# The configuration objects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TransportConfig:
    """Flags both modes share: the UDP transport, KCP, FEC and crypto."""

    ip: str = ""  # server: listen address ("" = all); client: the server's address
    port: int = 0  # required
    udp_mtu: int = _DEFAULTS.udp_mtu
    kcp_mode: str = _DEFAULTS.kcp_mode
    sndwnd: int = _DEFAULTS.sndwnd
    rcvwnd: int = _DEFAULTS.rcvwnd
    datashard: int = (_DEFAULTS.fec or (0, 0))[0]
    parityshard: int = (_DEFAULTS.fec or (0, 0))[1]
    rapid_fec: bool = _DEFAULTS.rapid_fec
    congestion: str = _DEFAULTS.congestion
    unordered: bool = _DEFAULTS.unordered
    flow_queueing: bool = _DEFAULTS.flow_queueing
    dscp: int = 0
    sockbuf: int = _DEFAULTS.sockbuf
    smuxbuf: int = _DEFAULTS.smuxbuf
    keepalive: int = _DEFAULTS.keepalive
    rekey_interval: int = _DEFAULTS.rekey_interval
    secret: str = field(default="", repr=False)
    # Salts the stretching of the secret: both sides must name the same network.
    network: str = DEFAULT_NETWORK
    allow_weak_key: bool = False
    # Identity mode: this side's X25519 private key (a file, mode 600).
    private_key_file: str | None = None
    crypt: str = _DEFAULTS.crypt
    tcp: bool = False
    # Hidden; used by --kcp-mode manual.
    acknodelay: bool = _DEFAULTS.acknodelay
    nodelay: int = _MANUAL[0]
    interval: int = _MANUAL[1]
    resend: int = _MANUAL[2]
    nc: int = _MANUAL[3]

    @property
    def kcp_profile(self) -> KcpProfile:
        """(nodelay, interval, resend, nc) for the selected --kcp-mode."""
        if self.kcp_mode == "manual":
            return KcpProfile(self.nodelay, self.interval, self.resend, self.nc)
        return KCP_PROFILES[self.kcp_mode]

    @property
    def fec(self) -> tuple[int, int] | None:
        """(data, parity) shards, or None: FEC is off when either is 0."""
        if self.datashard > 0 and self.parityshard > 0:
            return (self.datashard, self.parityshard)
        return None


@dataclass(frozen=True)
class ServerConfig:
    transport: TransportConfig = field(default_factory=TransportConfig)
    local_ip: str | None = None
    netmask: str | None = None
    vni_mtu: int = _engine.DEFAULT_VNI_MTU
    full_frame_mtu: int = 0  # 0 = vni_mtu + 22
    vni_name_prefix: str = "kvs"
    vni_mode: str = "tun"
    assignable_ips: str | None = None
    # Addresses clients may ask for when there is no pool (CIDRs, comma-separated).
    allowed_client_ips: str | None = None
    max_clients: int = DEFAULT_MAX_CLIENTS
    hook_dir: str | None = None
    bridge: str | None = None
    mss_clamp: bool = True
    tun_offload: bool = True
    log_level: str = "info"
    log_format: str = "text"
    status_socket: str | None = None
    metrics: str | None = None  # HOST:PORT of the Prometheus exporter
    # Identity mode: the allowed clients, from the --config file's [[peer]]
    # tables and from --peers-file (read at start).
    peers_file: str | None = None
    peers: tuple[PeerEntry, ...] = ()

    @property
    def identity(self) -> bool:
        """Identity mode: a private key (only the listed peers get in)."""
        return self.transport.private_key_file is not None

    @property
    def prefixlen(self) -> int | None:
        """--netmask as a prefix length (None when unset)."""
        return netmask_prefixlen(self.netmask) if self.netmask else None

    @property
    def frame_mtu(self) -> int:
        """The effective full-frame MTU."""
        return self.full_frame_mtu or self.vni_mtu + FRAME_HEADROOM


@dataclass(frozen=True)
class ClientConfig:
    transport: TransportConfig = field(default_factory=TransportConfig)
    local_ip: str | None = None
    vni_mtu: int = _engine.DEFAULT_VNI_MTU
    client_id: str = ""
    netmask: str | None = None  # accepted, without effect: the server decides
    vni_name: str = "kvc0"
    persistent_vni: bool = False
    auto_reconnect: bool = False
    bridge: str | None = None
    on_connected_hook: str | None = None
    on_disconnected_hook: str | None = None
    no_ip_configuration: bool = False
    mss_clamp: bool = True
    tun_offload: bool = True
    log_level: str = "info"
    log_format: str = "text"
    status_socket: str | None = None
    metrics: str | None = None  # HOST:PORT of the Prometheus exporter
    # Identity mode: the server's public key (base64), pinned.
    server_public_key: str | None = None

    @property
    def identity(self) -> bool:
        return self.transport.private_key_file is not None

    @property
    def ip_mode(self) -> int:
        """0 = the server assigns, 1 = --local-ip, 2 = --no-ip-configuration
        (also with --bridge and no --local-ip: a bridge port gets no address,
        so none is taken from the server's pool)."""
        if self.no_ip_configuration:
            return 2
        if self.local_ip:
            return 1
        return 2 if self.bridge else 0


Config = ServerConfig | ClientConfig
_TRANSPORT_FIELDS = {f.name for f in dataclasses.fields(TransportConfig)}


# --------------------------------------------------------------------------
# The flag table
# --------------------------------------------------------------------------

BOTH: frozenset[str] = frozenset({"server", "client"})
SERVER: frozenset[str] = frozenset({"server"})
CLIENT: frozenset[str] = frozenset({"client"})

PANEL_TRANSPORT = "Transport"
PANEL_TUNNEL = "Tunnel"
PANEL_INTERFACE = "Interface"
PANEL_HOOKS = "Hooks"
PANEL_TUNING = "Tuning"
PANEL_GENERAL = "General"


@dataclass(frozen=True)
class Flag:
    """One command-line flag (and config-file key)."""

    field: str  # attribute of TransportConfig / ServerConfig / ClientConfig
    names: tuple[str, ...]  # first is the canonical --name, the rest aliases
    help: str | Mapping[str, str]  # or one text per mode
    panel: str
    modes: frozenset[str] = BOTH
    hidden: bool = False
    envvar: str | None = None
    metavar: str | None = None
    # Flags whose config field is the negation (--no-mss-clamp sets mss_clamp False).
    negates: bool = False
    # A switch on by default: the name that turns it off (--no-rapid-fec).
    off_switch: str | None = None
    new: bool = False  # not in the original

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def key(self) -> str:
        """The config-file key (kebab case; snake case is accepted too)."""
        return self.name[2:]

    def help_for(self, mode: str) -> str:
        return self.help if isinstance(self.help, str) else self.help[mode]


def _kcp_modes_help() -> str:
    prof = ", ".join(
        f"{n} = {p.nodelay}/{p.interval}/{p.resend}/{p.nc}" for n, p in KCP_PROFILES.items()
    )
    return f"KCP profile (nodelay/interval ms/resend/nc): {prof}; manual = the hidden flags"


FLAGS: tuple[Flag, ...] = (
    # Transport
    Flag(
        "ip",
        ("--ip",),
        {
            "server": "Address to listen on (empty, 0.0.0.0 or :: = all; IPv4 or IPv6)",
            "client": "The server's address: host name, IPv4 or IPv6",
        },
        PANEL_TRANSPORT,
        metavar="ADDR",
    ),
    Flag(
        "port",
        ("--port",),
        {
            "server": "UDP port to listen on (required)",
            "client": "The server's UDP port (required)",
        },
        PANEL_TRANSPORT,
        metavar="PORT",
    ),
    Flag(
        "secret",
        ("--secret",),
        "Pre-shared secret (required); better in the environment or the config file",
        PANEL_TRANSPORT,
        envvar=SECRET_ENV,
        metavar="TEXT",
    ),
    Flag(
        "network",
        ("--network",),
        "Name of this VPN (1..64 bytes), the same on both sides: it salts the stretching "
        "of the secret, so a dictionary made for one network is useless on another",
        PANEL_TRANSPORT,
        metavar="NAME",
        new=True,
    ),
    Flag(
        "allow_weak_key",
        ("--allow-weak-key",),
        "Start even with a weak secret (under 16 characters, under 8 different ones, "
        "a repeated string or a run such as abcd...); without it a weak secret is refused",
        PANEL_TRANSPORT,
        new=True,
    ),
    Flag(
        "private_key_file",
        ("--private-key-file",),
        {
            "server": "Identity mode: file with the server's private key (`kcpvpn genkey`, "
            "mode 600); only the clients listed as peers get in, each with its own id and "
            "address",
            "client": "Identity mode: file with this client's private key (`kcpvpn genkey`, "
            "mode 600); needs --server-public-key",
        },
        PANEL_TRANSPORT,
        metavar="FILE",
        new=True,
    ),
    Flag(
        "peers_file",
        ("--peers-file",),
        "Identity mode: TOML file of [[peer]] tables (public-key, client-id, address), "
        "the clients allowed in, besides the --config file's own [[peer]] tables",
        PANEL_TRANSPORT,
        modes=SERVER,
        metavar="FILE",
        new=True,
    ),
    Flag(
        "server_public_key",
        ("--server-public-key",),
        "Identity mode: the server's public key (base64, `kcpvpn pubkey` of its private "
        "key); a server without the matching private key cannot complete the handshake",
        PANEL_TRANSPORT,
        modes=CLIENT,
        metavar="KEY",
        new=True,
    ),
    Flag(
        "crypt",
        ("--crypt",),
        "Cipher: aes (AES-256-GCM), aes-128 (AES-128-GCM), chacha20 (ChaCha20-Poly1305), "
        "none (no encryption, no authentication)",
        PANEL_TRANSPORT,
        metavar="CIPHER",
    ),
    Flag(
        "udp_mtu",
        ("--udp-mtu",),
        f"Largest UDP payload in bytes ({UDP_MTU_MIN}..{UDP_MTU_MAX})",
        PANEL_TRANSPORT,
        metavar="BYTES",
    ),
    Flag("dscp", ("--dscp",), "DSCP value of outgoing datagrams (6 bits, 0..63)", PANEL_TRANSPORT),
    Flag(
        "sockbuf",
        ("--sockbuf",),
        "UDP socket send/receive buffer in bytes",
        PANEL_TRANSPORT,
        metavar="BYTES",
    ),
    Flag(
        "keepalive",
        ("--keepalive",),
        "Seconds between keepalives when idle; a peer silent for 3 periods is dropped",
        PANEL_TRANSPORT,
        metavar="SECONDS",
    ),
    Flag(
        "rekey_interval",
        ("--rekey-interval",),
        "Seconds between key updates inside a session (fresh keys from a new "
        "Diffie-Hellman exchange; no packet is lost across one); the client starts them",
        PANEL_TRANSPORT,
        metavar="SECONDS",
        new=True,
    ),
    Flag(
        "tcp",
        ("--tcp",),
        "Carry datagrams as fake TCP segments over raw sockets, for paths that block "
        "or throttle UDP (both sides; adds a firewall table of its own while running)",
        PANEL_TRANSPORT,
    ),
    # Tuning
    Flag("kcp_mode", ("--kcp-mode",), _kcp_modes_help(), PANEL_TUNING, metavar="MODE"),
    Flag(
        "sndwnd",
        ("--sndwnd",),
        f"KCP send window in packets ({WND_MIN}..{WND_MAX})",
        PANEL_TUNING,
        metavar="PACKETS",
    ),
    Flag(
        "rcvwnd",
        ("--rcvwnd",),
        f"KCP receive window in packets ({WND_MIN}..{WND_MAX})",
        PANEL_TUNING,
        metavar="PACKETS",
    ),
    Flag(
        "datashard",
        ("--datashard", "--ds"),
        "Reed-Solomon data shards per FEC group (0 = FEC off; data + parity <= 255)",
        PANEL_TUNING,
    ),
    Flag(
        "parityshard",
        ("--parityshard", "--ps"),
        "Most Reed-Solomon parity shards per FEC group (0 = FEC off); from the loss the "
        f"peer reports, {FEC_TARGETS}",
        PANEL_TUNING,
    ),
    Flag(
        "rapid_fec",
        ("--rapid-fec",),
        f"Rapid FEC: {RAPID_FEC_DELAY}, so a lost packet is rebuilt without waiting for a "
        "retransmission; on by default (off in the original), --no-rapid-fec turns it off",
        PANEL_TUNING,
        off_switch="--no-rapid-fec",
    ),
    Flag(
        "congestion",
        ("--congestion",),
        "Congestion control: bbr (pace at the measured bottleneck rate; random loss does "
        "not slow it) or off (send a whole window per round trip, like the original)",
        PANEL_TUNING,
        metavar="CC",
        new=True,
    ),
    Flag(
        "unordered",
        ("--unordered",),
        "Deliver a packet that arrived beyond a loss at once instead of after the "
        "retransmission fills the gap: lower latency for UDP, voice and games, but "
        "TCP with cubic inside reads the reordering as loss and slows down; "
        "--ordered keeps strict order",
        PANEL_TUNING,
        off_switch="--ordered",
        new=True,
    ),
    Flag(
        "flow_queueing",
        ("--flow-queueing",),
        "Queue what enters the tunnel per flow, served fairly with new and sparse flows "
        f"first, and bound each queue in time with CoDel (target {_engine.CODEL_TARGET_MS} ms): "
        "a ping stays at the path's RTT while a download runs; --no-flow-queueing sends "
        "first in first out, like the original",
        PANEL_TUNING,
        off_switch="--no-flow-queueing",
        new=True,
    ),
    Flag(
        "smuxbuf",
        ("--smuxbuf",),
        "Bytes a session may hold queued for sending before the interface is read no further",
        PANEL_TUNING,
        metavar="BYTES",
    ),
    Flag("acknodelay", ("--acknodelay",), "Send ACKs at once", PANEL_TUNING, hidden=True),
    Flag("nodelay", ("--nodelay",), "KCP nodelay (manual mode)", PANEL_TUNING, hidden=True),
    Flag(
        "interval", ("--interval",), "KCP interval in ms (manual mode)", PANEL_TUNING, hidden=True
    ),
    Flag("resend", ("--resend",), "KCP fast resend (manual mode)", PANEL_TUNING, hidden=True),
    Flag("nc", ("--nc",), "KCP no congestion control (manual mode)", PANEL_TUNING, hidden=True),
    # Tunnel
    Flag(
        "vni_mode",
        ("--vni-mode",),
        "Interface type: tun (IP packets) or tap (Ethernet frames)",
        PANEL_TUNNEL,
        modes=SERVER,
        metavar="tun|tap",
    ),
    Flag(
        "local_ip",
        ("--local-ip",),
        {
            "server": "The server's tunnel address (taken out of the pool)",
            "client": "Ask the server for this fixed tunnel address",
        },
        PANEL_TUNNEL,
        metavar="ADDR",
    ),
    Flag(
        "netmask",
        ("--netmask",),
        {
            "server": "Netmask or prefix length of the tunnel subnet (TAP mode; required there "
            "with --assignable-ips or --local-ip)",
            "client": "Accepted for the original's command lines; the server decides the "
            "netmask (its --netmask), so this has no effect",
        },
        PANEL_TUNNEL,
        metavar="MASK",
    ),
    Flag(
        "assignable_ips",
        ("--assignable-ips",),
        "Addresses to give clients: CIDR (192.168.0.0/24) or range (192.168.0.2-192.168.0.254); "
        "IPv6 too",
        PANEL_TUNNEL,
        modes=SERVER,
        metavar="POOL",
    ),
    Flag(
        "allowed_client_ips",
        ("--allowed-client-ips",),
        "Without --assignable-ips: the addresses clients may ask for with their --local-ip "
        "(CIDRs, comma-separated, e.g. 192.168.88.0/24,fd00::/64); any other is refused",
        PANEL_TUNNEL,
        modes=SERVER,
        metavar="CIDRS",
        new=True,
    ),
    Flag(
        "max_clients",
        ("--max-clients",),
        f"Most clients connected at once (1..{MAX_CLIENTS_LIMIT}); more are refused with a reason",
        PANEL_TUNNEL,
        modes=SERVER,
        metavar="N",
        new=True,
    ),
    Flag(
        "client_id",
        ("--client-id",),
        "This client's id for the server's hooks (at most 16 bytes of A-Za-z0-9_-)",
        PANEL_TUNNEL,
        modes=CLIENT,
        metavar="ID",
    ),
    Flag(
        "no_ip_configuration",
        ("--no-ip-configuration",),
        "Set no address on the interface (DHCP, bridges)",
        PANEL_TUNNEL,
        modes=CLIENT,
    ),
    Flag(
        "auto_reconnect",
        ("--auto-reconnect",),
        "Reconnect with backoff after the session ends",
        PANEL_TUNNEL,
        modes=CLIENT,
    ),
    Flag(
        "mss_clamp",
        ("--no-mss-clamp",),
        "Do not lower the MSS of TCP SYNs crossing the tunnel to fit its MTU",
        PANEL_TUNNEL,
        negates=True,
        new=True,
    ),
    Flag(
        "tun_offload",
        ("--tun-offload",),
        "TUN interfaces hand the tunnel TCP/UDP super-packets of up to 64 KB and take "
        "merged ones (IFF_VNET_HDR, TSO/USO; cut and merged in the daemon, the wire does "
        "not change), where the kernel allows; --no-tun-offload reads and writes packet "
        "by packet. TAP interfaces never offload",
        PANEL_INTERFACE,
        off_switch="--no-tun-offload",
        new=True,
    ),
    # Interface
    Flag(
        "vni_mtu",
        ("--vni-mtu",),
        {
            "server": f"Interface MTU ({VNI_MTU_MIN}..{VNI_MTU_MAX}); "
            "both sides use the smaller of theirs",
            "client": f"Wanted interface MTU ({VNI_MTU_MIN}..{VNI_MTU_MAX}); "
            "both sides use the smaller of theirs",
        },
        PANEL_INTERFACE,
        metavar="BYTES",
    ),
    Flag(
        "full_frame_mtu",
        ("--full-frame-mtu",),
        f"Largest frame read from the interface (0 = VNI MTU + {FRAME_HEADROOM})",
        PANEL_INTERFACE,
        modes=SERVER,
        metavar="BYTES",
    ),
    Flag(
        "vni_name_prefix",
        ("--vni-name-prefix",),
        "Per-client interface names: prefix + counter",
        PANEL_INTERFACE,
        modes=SERVER,
        metavar="PREFIX",
    ),
    Flag(
        "vni_name",
        ("--vni-name",),
        "Interface name",
        PANEL_INTERFACE,
        modes=CLIENT,
        metavar="NAME",
    ),
    Flag(
        "persistent_vni",
        ("--persistent-vni",),
        "Keep the interface after exit and reuse it on the next start",
        PANEL_INTERFACE,
        modes=CLIENT,
    ),
    Flag(
        "bridge",
        ("--bridge",),
        "Add the TAP interface to this existing bridge (TAP mode); it then gets no address",
        PANEL_INTERFACE,
        metavar="NAME",
    ),
    # Hooks
    Flag(
        "hook_dir",
        ("--hook-dir",),
        "Directory of on_<client-id>_connected, on_connected, on_<client-id>_disconnected, "
        "on_disconnected",
        PANEL_HOOKS,
        modes=SERVER,
        metavar="DIR",
    ),
    Flag(
        "on_connected_hook",
        ("--on-connected-hook",),
        "Executable run after connecting",
        PANEL_HOOKS,
        modes=CLIENT,
        metavar="PATH",
    ),
    Flag(
        "on_disconnected_hook",
        ("--on-disconnected-hook",),
        "Executable run after the session ends",
        PANEL_HOOKS,
        modes=CLIENT,
        metavar="PATH",
        new=True,
    ),
    # General
    Flag(
        "log_level",
        ("--log-level",),
        "debug, info, warning or error",
        PANEL_GENERAL,
        metavar="LEVEL",
        new=True,
    ),
    Flag(
        "log_format",
        ("--log-format",),
        "text (one line per event; no timestamp under systemd, whose journal adds one) "
        "or json (one object per line, for log shippers)",
        PANEL_GENERAL,
        metavar="text|json",
        new=True,
    ),
    Flag(
        "metrics",
        ("--metrics",),
        "Serve Prometheus metrics over HTTP on HOST:PORT (e.g. 127.0.0.1:9477 or [::1]:9477); "
        "default off",
        PANEL_GENERAL,
        metavar="HOST:PORT",
        new=True,
    ),
    Flag(
        "status_socket",
        ("--status-socket",),
        "Unix socket where `kcpvpn status` reads live figures "
        "(default /run/kcpvpn/server-PORT.sock or /run/kcpvpn/client-VNI.sock; 'none' = off)",
        PANEL_GENERAL,
        metavar="PATH",
        new=True,
    ),
)


def flags_for(mode: str) -> tuple[Flag, ...]:
    return tuple(f for f in FLAGS if mode in f.modes)


def default_of(mode: str, flag: Flag) -> Any:
    """The built-in default of a flag as the user writes it (negations inverted)."""
    cls = TransportConfig if flag.field in _TRANSPORT_FIELDS else _mode_class(mode)
    value = {f.name: f for f in dataclasses.fields(cls)}[flag.field].default
    return (not value) if flag.negates else value


def _mode_class(mode: str) -> type[ServerConfig] | type[ClientConfig]:
    return ServerConfig if mode == "server" else ClientConfig


def field_type(mode: str, name: str) -> type:
    cls = TransportConfig if name in _TRANSPORT_FIELDS else _mode_class(mode)
    default = {f.name: f for f in dataclasses.fields(cls)}[name].default
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    return str


# --------------------------------------------------------------------------
# Loading: defaults < file < environment < flags
# --------------------------------------------------------------------------


def load_config_file(path: str | Path, mode: str) -> dict[str, Any]:
    """Reads a TOML file with the flags' names as keys (kebab or snake case,
    aliases such as `ds` too) and returns {field: value} as the user means it
    (negated flags already turned into their field's value)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None

    by_key: dict[str, Flag] = {}
    for f in FLAGS:
        for n in f.names:
            by_key[n[2:]] = f
    mine = {f.field for f in flags_for(mode)}
    other = "client" if mode == "server" else "server"
    problems: list[str] = []
    values: dict[str, Any] = {}
    if "peer" in data:
        from .keys import parse_peers

        items = data.pop("peer")
        if mode != "server":
            problems.append(f"{path}: [[peer]] tables are a server setting (identity mode)")
        else:
            peers, bad = parse_peers(items, str(path))
            problems += bad
            values["peers"] = tuple(peers)
    for key, value in data.items():
        flag = by_key.get(key.replace("_", "-"))
        if flag is None:
            hint = difflib.get_close_matches(key.replace("_", "-"), list(by_key), n=1)
            problems.append(
                f"{path}: unknown key {key!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "; keys are the flags' names")
            )
            continue
        if flag.field not in mine:
            problems.append(
                f"{path}: key {key!r} is a {other} setting; `kcpvpn {mode}` has no {flag.name}"
            )
            continue
        if flag.field in values:
            problems.append(f"{path}: {flag.name} is set twice (as {key!r} and an alias)")
            continue
        want = field_type(mode, flag.field)
        if flag.field == "netmask" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `netmask = 24` is a prefix length
        if not _is_type(value, want):
            problems.append(
                f"{path}: {key!r} must be {_type_name(want)}, not {_type_name(type(value))} "
                f"(e.g. {key} = {_example(want)})"
            )
            continue
        values[flag.field] = (not value) if flag.negates else value
    if problems:
        raise ConfigError(problems)
    if "secret" in values:
        mode_bits = stat.S_IMODE(p.stat().st_mode)
        if mode_bits & 0o077:
            raise ConfigError(
                f"{path} holds the secret but its mode is {mode_bits:04o}, so other users may "
                f"read it: run `chmod 600 {path}`, or pass the secret in {SECRET_ENV}"
            )
    return values


def _is_type(value: Any, want: type) -> bool:
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


def _type_name(t: type) -> str:
    return {bool: "true or false", int: "an integer", str: "a string"}.get(t, t.__name__)


def _example(t: type) -> str:
    return {bool: "true", int: "10", str: '"text"'}[t]


class Loaded(NamedTuple):
    config: ServerConfig | ClientConfig
    warnings: list[str]
    explicit: frozenset[str]  # fields set by the file, the environment or flags


def load_config(
    mode: Mode,
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Loaded:
    """The validated configuration of one mode, with warnings.

    `flags` holds only the settings given on the command line, by field name
    (`mss_clamp=False` for --no-mss-clamp; None values count as not given).
    `env` defaults to os.environ (for KCPVPN_KEY). Raises ConfigError listing
    every problem found.
    """
    if mode not in ("server", "client"):
        raise ValueError(f"mode must be 'server' or 'client', not {mode!r}")
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    known = {f.field: f for f in flags_for(mode)}
    problems = [f"`kcpvpn {mode}` has no setting {u!r}" for u in sorted(set(flags) - set(known))]
    for k, v in flags.items():
        if k in known and not _is_type(v, field_type(mode, k)):
            want = _type_name(field_type(mode, k))
            problems.append(f"{known[k].name} must be {want}, not {v!r}")
    if problems:
        raise ConfigError(problems)
    env = os.environ if env is None else env

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        for k, v in load_config_file(config_file, mode).items():
            merged[k], origin[k] = v, f"from {config_file}"
    if env.get(SECRET_ENV):
        merged["secret"], origin["secret"] = env[SECRET_ENV], f"from {SECRET_ENV}"
    for k, v in flags.items():
        merged[k], origin[k] = v, ""
    # Harmless spellings: [::1] for ::1, INFO for info.
    if "ip" in merged:
        merged["ip"] = _strip_brackets(merged["ip"].strip())
    for key in ("log_level", "log_format"):
        if key in merged:
            merged[key] = merged[key].lower()

    transport = TransportConfig(**{k: v for k, v in merged.items() if k in _TRANSPORT_FIELDS})
    rest = {k: v for k, v in merged.items() if k not in _TRANSPORT_FIELDS}
    cfg = _mode_class(mode)(transport=transport, **rest)

    problems = [
        msg + (f" ({origin[name]})" if origin.get(name) else "") for name, msg in validate(cfg)
    ]
    if problems:
        raise ConfigError(problems)
    explicit = frozenset(merged)
    return Loaded(cfg, config_warnings(cfg, explicit), explicit)


def build_config(
    mode: Mode,
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerConfig | ClientConfig:
    """load_config without the warnings."""
    return load_config(mode, flags, config_file=config_file, env=env).config


def build_server_config(config_file: str | Path | None = None, **flags: Any) -> ServerConfig:
    cfg = build_config("server", flags, config_file=config_file)
    assert isinstance(cfg, ServerConfig)
    return cfg


def build_client_config(config_file: str | Path | None = None, **flags: Any) -> ClientConfig:
    cfg = build_config("client", flags, config_file=config_file)
    assert isinstance(cfg, ClientConfig)
    return cfg


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def allowed_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`10.0.0.0/24,fd00::/64` -> the networks. ValueError naming a bad one."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"{part!r} is not a network: write CIDRs such as 192.168.88.0/24 or fd00::/64"
            ) from None
    if not nets:
        raise ValueError("no network given: write CIDRs such as 192.168.88.0/24")
    return nets


def netmask_prefixlen(netmask: str) -> int:
    """255.255.255.0, 24 or /24 -> 24. ValueError if it is neither."""
    text = netmask.strip().lstrip("/")
    if text.isdigit():
        n = int(text)
        if n > 128:
            raise ValueError(f"prefix length {n} is out of range (0..32 for IPv4, 0..128 for IPv6)")
        return n
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
    except ValueError:
        raise ValueError(
            f"{netmask!r} is not a netmask: write a contiguous IPv4 mask such as "
            "255.255.255.0 or a prefix length such as 24"
        ) from None


def parse_host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:9477', '[::1]:9477', ':9477' (all addresses) or
    'localhost:9477' -> (host, port). ValueError says what is wrong."""
    example = "write HOST:PORT, e.g. 127.0.0.1:9477, [::1]:9477 or :9477 for all addresses"
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{text!r} has no port: {example}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is out of range: use 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address: {example}") from None
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets ([::1]:9477)")
    elif host:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _is_hostname(host):
                raise ValueError(f"{host!r} in {text!r} is not a host name or address") from None
    return host, port


def _is_hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        return False  # looks like a (bad) IPv4 address, not a name
    return all(_HOST_LABEL_RE.fullmatch(label) for label in labels)


def _strip_brackets(text: str) -> str:
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def _ifname_problem(flag: str, name: str, max_len: int) -> str | None:
    if not name or not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        return (
            f"{flag} {name!r} is not a usable interface name: use letters, digits, '_', '-' or '.'"
        )
    if len(name.encode()) > max_len:
        return f"{flag} {name!r} is too long: at most {max_len} characters"
    return None


def client_id_problem(client_id: str) -> str | None:
    """Why a client id is unacceptable, or None (the empty id is fine)."""
    if len(client_id.encode()) > CLIENT_ID_MAX:
        return f"client id {client_id!r} is longer than {CLIENT_ID_MAX} bytes"
    if not _CLIENT_ID_RE.fullmatch(client_id):
        return f"client id {client_id!r} may only hold letters, digits, '_' and '-'"
    return None


class _Problems(list[tuple[str, str]]):
    """(field, message) pairs."""

    def add(self, name: str, message: str) -> None:
        self.append((name, message))

    def range(self, name: str, flag: str, value: int, lo: int, hi: int, why: str = "") -> None:
        if not lo <= value <= hi:
            self.add(name, f"{flag} {value} is out of range: use {lo}..{hi}{why}")


def validate(cfg: Config) -> list[tuple[str, str]]:
    """Every problem of a configuration as (field, message); empty if valid."""
    t = cfg.transport
    mode = "server" if isinstance(cfg, ServerConfig) else "client"
    p = _Problems()

    # -- transport --
    if mode == "server":
        ip = t.ip
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                p.add(
                    "ip",
                    f"--ip {t.ip!r} is not an IP address: give the address to listen on "
                    "(e.g. 0.0.0.0, :: or 192.168.1.10), or leave it out to listen on all",
                )
    else:
        ip = t.ip
        if not ip:
            p.add("ip", "--ip is missing: give the server's host name or address")
        else:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                if not _is_hostname(ip):
                    p.add(
                        "ip",
                        f"--ip {t.ip!r} is neither a host name nor an IPv4/IPv6 address "
                        "(e.g. vpn.example.com, 203.0.113.7 or 2001:db8::7)",
                    )
    if t.port == 0:
        what = "the UDP port to listen on" if mode == "server" else "the server's UDP port"
        p.add("port", f"--port is missing: give {what} (e.g. --port 1235)")
    else:
        p.range("port", "--port", t.port, 1, 65535)
    p.range(
        "udp_mtu",
        "--udp-mtu",
        t.udp_mtu,
        UDP_MTU_MIN,
        UDP_MTU_MAX,
        " (the largest UDP payload; 8972 fits a 9000-byte jumbo link)",
    )
    if t.kcp_mode not in KCP_MODES:
        p.add("kcp_mode", f"--kcp-mode {t.kcp_mode!r} is unknown: use {', '.join(KCP_MODES)}")
    for name in ("sndwnd", "rcvwnd"):
        p.range(name, f"--{name}", getattr(t, name), WND_MIN, WND_MAX, " packets")
    p.range("datashard", "--datashard", t.datashard, 0, FEC_MAX_SHARDS)
    p.range("parityshard", "--parityshard", t.parityshard, 0, FEC_MAX_SHARDS)
    if t.datashard >= 0 and t.parityshard >= 0 and t.datashard + t.parityshard > FEC_MAX_SHARDS:
        p.add(
            "parityshard",
            f"--datashard {t.datashard} + --parityshard {t.parityshard} = "
            f"{t.datashard + t.parityshard} shards; Reed-Solomon allows at most "
            f"{FEC_MAX_SHARDS} per group",
        )
    p.range("dscp", "--dscp", t.dscp, 0, DSCP_MAX, " (6 bits; e.g. 46 for expedited forwarding)")
    p.range("sockbuf", "--sockbuf", t.sockbuf, BUF_MIN, BUF_MAX, " bytes")
    p.range("smuxbuf", "--smuxbuf", t.smuxbuf, BUF_MIN, BUF_MAX, " bytes")
    p.range("keepalive", "--keepalive", t.keepalive, KEEPALIVE_MIN, KEEPALIVE_MAX, " seconds")
    p.range(
        "rekey_interval", "--rekey-interval", t.rekey_interval, REKEY_MIN, REKEY_MAX, " seconds"
    )
    if not t.secret:
        p.add(
            "secret",
            f'the secret is missing: set {SECRET_ENV}, put `secret = "..."` in a '
            "--config file readable by you only, or pass --secret",
        )
    elif not t.allow_weak_key:
        weak = secret_problem(t.secret)
        if weak:
            p.add("secret", weak_secret_message(weak))
    why = _engine_network_problem(t.network)
    if why:
        p.add("network", f"--network {t.network!r}: {why}")
    if t.private_key_file is not None:
        try:
            read_private_key(t.private_key_file)
        except ValueError as e:
            p.add("private_key_file", str(e))
    if t.crypt not in CIPHERS:
        named = [f"{k} ({v})" for k, v in CIPHERS.items()]
        choices = ", ".join(named[:-1]) + " or " + named[-1]
        if t.crypt in LEGACY_CIPHERS:
            p.add(
                "crypt",
                f"--crypt {t.crypt} is one of the original's unauthenticated ciphers and is "
                f"not supported: use {choices}",
            )
        else:
            p.add("crypt", f"--crypt {t.crypt!r} is unknown: use {choices}")
    if t.congestion not in CONGESTION:
        p.add(
            "congestion",
            f"--congestion {t.congestion!r} is unknown: use bbr (the default) or off",
        )
    p.range("nodelay", "--nodelay", t.nodelay, 0, 1)
    p.range("interval", "--interval", t.interval, INTERVAL_MIN, INTERVAL_MAX, " ms")
    p.range("resend", "--resend", t.resend, 0, RESEND_MAX)
    p.range("nc", "--nc", t.nc, 0, 1)

    # -- tunnel and interface --
    local = None
    if cfg.local_ip:
        try:
            local = ipaddress.ip_address(cfg.local_ip)
        except ValueError:
            p.add(
                "local_ip",
                f"--local-ip {cfg.local_ip!r} is not an IPv4 or IPv6 address "
                "(e.g. 192.168.88.1 or fd00::1)",
            )
    p.range("vni_mtu", "--vni-mtu", cfg.vni_mtu, VNI_MTU_MIN, VNI_MTU_MAX, " bytes")
    if cfg.bridge is not None:
        why = _ifname_problem("--bridge", cfg.bridge, IFNAME_MAX)
        if why:
            p.add("bridge", why)
    if cfg.log_level.lower() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        p.add("log_level", f"--log-level {cfg.log_level!r} is unknown: use {levels}")
    if cfg.log_format not in LOG_FORMATS:
        p.add("log_format", f"--log-format {cfg.log_format!r} is unknown: use text or json")
    if cfg.metrics is not None:
        try:
            parse_host_port(cfg.metrics)
        except ValueError as e:
            p.add("metrics", f"--metrics: {e}")

    tunnel_addrs = [local] if local is not None else []
    if isinstance(cfg, ServerConfig):
        p += _validate_server(cfg, local, tunnel_addrs)
    else:
        p += _validate_client(cfg)

    if cfg.vni_mtu < IPV6_MIN_MTU and any(a.version == 6 for a in tunnel_addrs):
        p.add(
            "vni_mtu",
            f"--vni-mtu {cfg.vni_mtu} is below {IPV6_MIN_MTU}, the smallest MTU IPv6 "
            f"works with, but the tunnel addresses are IPv6: use --vni-mtu {IPV6_MIN_MTU} "
            "or more",
        )
    return p


def _validate_server(cfg: ServerConfig, local, addrs: list) -> list[tuple[str, str]]:
    p = _Problems()
    tap = cfg.vni_mode == "tap"
    if cfg.vni_mode not in ("tun", "tap"):
        p.add("vni_mode", f"--vni-mode {cfg.vni_mode!r} is unknown: use tun or tap")
    pool = None
    if cfg.assignable_ips is not None:
        try:
            pool = parse_pool_spec(cfg.assignable_ips)
        except ValueError as e:
            p.add("assignable_ips", f"--assignable-ips: {e}")
    if pool is not None:
        addrs.append(ipaddress.ip_address(pool.first))
        if local is not None and local.version != pool.version:
            p.add(
                "assignable_ips",
                f"--assignable-ips {cfg.assignable_ips} is IPv{pool.version} but --local-ip "
                f"{cfg.local_ip} is IPv{local.version}: use one family for both",
            )
    prefix = None
    if cfg.netmask is not None:
        try:
            prefix = netmask_prefixlen(cfg.netmask)
            family = local.version if local is not None else (pool.version if pool else 4)
            if "." in cfg.netmask and family == 6:
                p.add(
                    "netmask",
                    f"--netmask {cfg.netmask} is an IPv4 mask but the tunnel is IPv6: "
                    "give a prefix length such as 64",
                )
            elif family == 4 and prefix > 32:
                p.add("netmask", f"--netmask {cfg.netmask}: an IPv4 prefix is 0..32")
        except ValueError as e:
            p.add("netmask", f"--netmask: {e}")
    if tap and cfg.netmask is None and (cfg.assignable_ips is not None or cfg.local_ip):
        given = "--assignable-ips" if cfg.assignable_ips is not None else "--local-ip"
        p.add(
            "netmask",
            f"TAP mode with {given} needs --netmask: clients set address/netmask on their "
            "TAP (e.g. --netmask 255.255.255.0)",
        )
    if cfg.bridge is not None and not tap:
        p.add(
            "bridge",
            f"--bridge {cfg.bridge} needs --vni-mode tap: only Ethernet (TAP) interfaces "
            "can join a bridge",
        )
    extra = 14 if tap else 0  # an Ethernet header rides on top of the MTU in TAP mode
    if cfg.full_frame_mtu != 0 and not cfg.vni_mtu + extra <= cfg.full_frame_mtu <= FRAME_MTU_MAX:
        p.add(
            "full_frame_mtu",
            f"--full-frame-mtu {cfg.full_frame_mtu} is out of range: use 0 (automatic: "
            f"VNI MTU + {FRAME_HEADROOM}) or {cfg.vni_mtu + extra}..{FRAME_MTU_MAX}",
        )
    why = _ifname_problem("--vni-name-prefix", cfg.vni_name_prefix, PREFIX_MAX)
    if why:
        p.add("vni_name_prefix", why + " (three characters are kept for the counter)")
    p.range("max_clients", "--max-clients", cfg.max_clients, 1, MAX_CLIENTS_LIMIT)
    if cfg.allowed_client_ips is not None:
        try:
            allowed_networks(cfg.allowed_client_ips)
        except ValueError as e:
            p.add("allowed_client_ips", f"--allowed-client-ips: {e}")
        if cfg.assignable_ips is not None:
            p.add(
                "allowed_client_ips",
                "--allowed-client-ips applies only without --assignable-ips (with a pool, "
                "clients may ask for addresses inside the pool): keep one of them",
            )
    if cfg.hook_dir is not None and not Path(cfg.hook_dir).is_dir():
        p.add("hook_dir", f"--hook-dir {cfg.hook_dir}: no such directory; create it or fix it")
    p += _validate_identity(cfg, pool)
    return p


def _engine_network_problem(network: str) -> str | None:
    if not network or len(network.encode()) > MAX_NETWORK_LEN:
        return f"a network name is 1 to {MAX_NETWORK_LEN} bytes long"
    if any(unicodedata.category(c) == "Cc" for c in network):
        return "a network name holds no control characters"
    return None


def server_peers(cfg: ServerConfig) -> tuple[list[PeerEntry], list[str]]:
    """Every peer of the server (its --config file's, then its --peers-file's),
    and the problems found (duplicates across both included)."""
    from .keys import _duplicates, load_peers_file

    peers = list(cfg.peers)
    problems: list[str] = []
    if cfg.peers_file is not None:
        more, problems = load_peers_file(cfg.peers_file)
        peers += more
        if not problems:
            problems = _duplicates(peers, "the peers")
    return peers, problems


def _validate_identity(cfg: ServerConfig, pool) -> list[tuple[str, str]]:
    p = _Problems()
    peers, problems = server_peers(cfg)
    for why in problems:
        p.add("peers_file", why)
    if (peers or cfg.peers_file) and not cfg.identity:
        p.add(
            "private_key_file",
            "peers are listed but the server has no --private-key-file: identity mode needs "
            "the server's private key (`kcpvpn genkey`)",
        )
    for peer in peers:
        if peer.address is None:
            continue
        a = ipaddress.ip_address(peer.address)
        name = peer.client_id or peer.public_key
        if cfg.local_ip and a == ipaddress.ip_address(cfg.local_ip):
            p.add("peers_file", f"peer {name}: address {a} is the server's own --local-ip")
        elif pool is not None and not (
            a.version == pool.version and pool.first <= int(a) <= pool.last
        ):
            p.add(
                "peers_file",
                f"peer {name}: address {a} is outside --assignable-ips {cfg.assignable_ips}; "
                "a peer's fixed address is taken from the pool (reserved for it)",
            )
    return p


def _validate_client(cfg: ClientConfig) -> list[tuple[str, str]]:
    p = _Problems()
    if (cfg.server_public_key is None) != (cfg.transport.private_key_file is None):
        p.add(
            "server_public_key",
            "identity mode needs both --private-key-file (this client's key) and "
            "--server-public-key (the server's): give both, or neither for simple mode",
        )
    if cfg.server_public_key is not None:
        try:
            decode_key(cfg.server_public_key, "--server-public-key")
        except ValueError as e:
            p.add("server_public_key", str(e))
    if cfg.netmask is not None:
        try:
            netmask_prefixlen(cfg.netmask)
        except ValueError as e:
            p.add("netmask", f"--netmask: {e}")
    why = client_id_problem(cfg.client_id)
    if why:
        p.add(
            "client_id",
            f"--client-id: {why}; use at most {CLIENT_ID_MAX} of A-Za-z0-9_- (e.g. site-1)",
        )
    why = _ifname_problem("--vni-name", cfg.vni_name, IFNAME_MAX)
    if why:
        p.add("vni_name", why)
    if cfg.no_ip_configuration and cfg.local_ip:
        p.add(
            "local_ip",
            "--local-ip and --no-ip-configuration contradict each other: keep one",
        )
    for name, flag in (
        ("on_connected_hook", "--on-connected-hook"),
        ("on_disconnected_hook", "--on-disconnected-hook"),
    ):
        path = getattr(cfg, name)
        if path is None:
            continue
        why = executable_problem(path)
        if why:
            p.add(name, f"{flag} {path}: {why}")
    return p


def executable_problem(path: str | Path) -> str | None:
    """Why `path` cannot be run as a hook, or None."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot use it ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return f"not executable: run `chmod +x {path}`"
    return None


# --------------------------------------------------------------------------
# Warnings: valid but probably not what the user wants
# --------------------------------------------------------------------------

_MANUAL_ONLY = ("nodelay", "interval", "resend", "nc")


def config_warnings(cfg: Config, explicit: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Settings that are valid but likely mistakes; `explicit` names the
    fields the user set (file or flags)."""
    t = cfg.transport
    w: list[str] = []
    if t.kcp_mode != "manual":
        for name in _MANUAL_ONLY:
            if name in explicit:
                w.append(f"--{name} has no effect unless --kcp-mode manual (now {t.kcp_mode})")
    if (t.datashard == 0) != (t.parityshard == 0):
        zero = "--datashard" if t.datashard == 0 else "--parityshard"
        w.append(f"FEC is off because {zero} is 0")
    if t.crypt == "none":
        w.append("--crypt none: datagrams are neither encrypted nor authenticated")
    weak = secret_problem(t.secret) if t.secret and t.allow_weak_key else None
    if weak:
        w.append(
            f"the secret is weak ({weak}) and --allow-weak-key lets it through: anyone who "
            "captures a handshake can guess it offline; `kcpvpn genkey` prints a strong one"
        )
    if cfg.vni_mtu < IPV6_MIN_MTU:
        w.append(
            f"--vni-mtu {cfg.vni_mtu} is below {IPV6_MIN_MTU}: IPv6 will not work inside the tunnel"
        )
    if isinstance(cfg, ClientConfig) and cfg.identity and cfg.client_id:
        w.append(
            f"--client-id {cfg.client_id} has no effect in identity mode: the server's peer "
            "entry for this client's key names it"
        )
    if isinstance(cfg, ClientConfig) and cfg.netmask is not None:
        w.append(
            f"--netmask {cfg.netmask} has no effect on the client: the server decides the "
            "netmask (set --netmask on the server)"
        )
    if isinstance(cfg, ServerConfig):
        if cfg.identity and not cfg.peers and cfg.peers_file is None:
            w.append(
                "identity mode with no peers: every client is refused; list them in [[peer]] "
                "tables or a --peers-file"
            )
        if cfg.netmask is not None and cfg.vni_mode == "tun":
            w.append("--netmask has no effect in TUN mode: interfaces are point-to-point there")
        if cfg.hook_dir is not None:
            try:
                st = os.stat(cfg.hook_dir)
                if st.st_mode & 0o022:
                    w.append(
                        f"--hook-dir {cfg.hook_dir} is writable by other users, who could then "
                        f"run programs as this daemon: run `chmod go-w {cfg.hook_dir}`"
                    )
            except OSError:
                pass
        if cfg.vni_mode == "tap" and cfg.assignable_ips and cfg.netmask and cfg.local_ip:
            w += _tap_pool_warnings(cfg)
    return w


def _tap_pool_warnings(cfg: ServerConfig) -> list[str]:
    """In TAP mode the pool is taken as written; say so if it holds the
    subnet's network or broadcast address (the original's README asked users
    to leave them out by hand)."""
    try:
        pool = parse_pool_spec(cfg.assignable_ips or "")
        net = ipaddress.ip_network(f"{cfg.local_ip}/{netmask_prefixlen(cfg.netmask or '')}", False)
    except ValueError:
        return []
    if net.version != 4 or net.prefixlen > 30:
        return []
    bad = [
        str(a)
        for a in (net.network_address, net.broadcast_address)
        if pool.first <= int(a) <= pool.last
    ]
    if not bad:
        return []
    return [
        f"--assignable-ips {cfg.assignable_ips} includes {' and '.join(bad)}, the network/"
        f"broadcast address of {net}; in TAP mode the pool is used as written"
    ]
