//! The production surface of the data path: `Endpoint` (a native thread
//! running the sans-IO endpoint over a UDP socket and the sessions'
//! interfaces), the stretched secret `Psk`, the control plane's value types
//! (`HandshakeRequest`, `Offer`, `TunnelConfig`), the events, and the
//! counters. Python sends commands and reads typed events; session keys
//! never leave native memory.
use crate::errors;
use crate::params::SessionParams;
use kcpvpn_crypto::handshake as hs;
use kcpvpn_tunnel::driver::{Command, DriverHandle, SessionSnapshot, Snapshot};
use kcpvpn_tunnel::endpoint::{
    AcceptError, CloseReason, ConnectFailure, EndpointConfig, Event, Request, Role,
};
use kcpvpn_tunnel::transport::tcp::{Tcp, TcpConfig, TcpRole};
use kcpvpn_tunnel::transport::udp::Udp;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Psk>()?;
    m.add_function(wrap_pyfunction!(generate_private_key, m)?)?;
    m.add_function(wrap_pyfunction!(public_key, m)?)?;
    m.add("DEFAULT_NETWORK", hs::DEFAULT_NETWORK)?;
    m.add("MAX_NETWORK_LEN", hs::MAX_NETWORK_LEN)?;
    m.add_class::<Endpoint>()?;
    m.add_class::<Offer>()?;
    m.add_class::<TunnelConfig>()?;
    m.add_class::<HandshakeRequest>()?;
    m.add_class::<HandshakeRejected>()?;
    m.add_class::<Connected>()?;
    m.add_class::<ConnectFailed>()?;
    m.add_class::<SessionUp>()?;
    m.add_class::<SessionConfirmed>()?;
    m.add_class::<SessionClosed>()?;
    m.add_class::<PeerMoved>()?;
    m.add_class::<PathMtuProblem>()?;
    m.add_class::<EngineStats>()?;
    m.add_class::<EndpointStats>()?;
    m.add_class::<SessionStats>()?;
    m.add_class::<KcpStats>()?;
    // Event: the union of the event classes, for isinstance and annotations.
    let py = m.py();
    let or = py.import("operator")?.getattr("or_")?;
    let mut union = m.getattr("HandshakeRequest")?;
    for name in [
        "HandshakeRejected",
        "Connected",
        "ConnectFailed",
        "SessionUp",
        "SessionConfirmed",
        "SessionClosed",
        "PeerMoved",
        "PathMtuProblem",
    ] {
        union = or.call1((union, m.getattr(name)?))?;
    }
    m.add("Event", union)?;
    Ok(())
}

/// How long a command that answers (accept, attach) may wait for the data
/// path; it answers within one turn unless it is wedged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared secret after Argon2id stretching. Opaque to Python.
#[pyclass(frozen, module = "kcpvpn._engine")]
pub struct Psk(pub [u8; 32]);

#[pymethods]
impl Psk {
    /// Stretches `secret` with the salt of `network` (both sides must use
    /// the same name).
    #[new]
    #[pyo3(signature = (secret, network = hs::DEFAULT_NETWORK.to_string()))]
    fn new(py: Python<'_>, secret: &[u8], network: String) -> PyResult<Self> {
        if secret.is_empty() {
            return Err(errors::invalid(
                "the secret is empty: set --secret or KCPVPN_KEY",
            ));
        }
        if let Some(why) = hs::network_problem(&network) {
            return Err(errors::invalid(format!("--network: {why}")));
        }
        let s = secret.to_vec();
        // Deliberately slow (memory-hard); let other Python threads run meanwhile.
        let k = py.detach(move || hs::stretch_secret_for(&s, &network));
        Ok(Psk(k.map_err(errors::handshake)?))
    }
}

/// A new X25519 private key (32 random bytes from the OS).
#[pyfunction]
fn generate_private_key<'py>(py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
    pyo3::types::PyBytes::new(py, &hs::generate_private_key())
}

/// The X25519 public key of a 32-byte private key.
#[pyfunction]
fn public_key<'py>(
    py: Python<'py>,
    private_key: &[u8],
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let k = key32(private_key, "a private key")?;
    Ok(pyo3::types::PyBytes::new(py, &hs::public_key(&k)))
}

fn key32(b: &[u8], what: &str) -> PyResult<[u8; 32]> {
    b.try_into().map_err(|_| {
        errors::invalid(format!(
            "{what} is 32 bytes (44 characters of base64), not {}",
            b.len()
        ))
    })
}

/// A peer as Python gives it: (public key, client id, fixed address).
type PeerSpec = (Vec<u8>, String, Option<String>);

fn server_responder(
    psk: &Psk,
    max_age_ms: u64,
    private_key: Option<&[u8]>,
    peers: Vec<PeerSpec>,
) -> PyResult<hs::Responder> {
    let r = hs::Responder::new(&psk.0, max_age_ms);
    let Some(private) = private_key else {
        if !peers.is_empty() {
            return Err(errors::invalid(
                "peers need identity mode: give the server a private key too",
            ));
        }
        return Ok(r);
    };
    Ok(r.with_identity(server_identity(private, peers)?))
}

fn server_identity(private_key: &[u8], peers: Vec<PeerSpec>) -> PyResult<hs::ServerIdentity> {
    let peers = peers
        .into_iter()
        .map(|(key, client_id, ip)| {
            Ok(hs::Peer {
                public_key: key32(&key, "a peer's public key")?,
                client_id,
                ip: parse_ip(ip.as_deref(), "a peer's address")?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    hs::ServerIdentity::new(key32(private_key, "the private key")?, peers)
        .map_err(errors::handshake)
}

fn client_identity(
    private_key: Option<&[u8]>,
    server_public_key: Option<&[u8]>,
) -> PyResult<Option<hs::ClientIdentity>> {
    match (private_key, server_public_key) {
        (None, None) => Ok(None),
        (Some(p), Some(s)) => Ok(Some(hs::ClientIdentity {
            private_key: key32(p, "the private key")?,
            server_public_key: key32(s, "the server's public key")?,
        })),
        _ => Err(errors::invalid(
            "identity mode needs both the client's private key and the server's public key",
        )),
    }
}

type Addr = (String, u16);

fn sockaddr(addr: &Addr) -> PyResult<SocketAddr> {
    let ip: IpAddr = addr
        .0
        .parse()
        .map_err(|_| errors::invalid(format!("{:?} is not an IP address", addr.0)))?;
    Ok(SocketAddr::new(ip, addr.1))
}

/// An address as Python shows it: IPv4 peers of a dual-stack socket as
/// plain IPv4.
fn addr_tuple(a: &SocketAddr) -> Addr {
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    (ip.to_string(), a.port())
}

fn parse_ip(s: Option<&str>, what: &str) -> PyResult<Option<IpAddr>> {
    s.map(|s| {
        s.parse()
            .map_err(|_| errors::invalid(format!("{what} {s:?} is not an IP address")))
    })
    .transpose()
}

/// Takes a descriptor Python dup'ed for us.
fn take_fd(fd: i32) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(errors::invalid("invalid file descriptor"));
    }
    // SAFETY: Python handed over a dup'ed descriptor that only we will close.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ------------------------------------------------------------ value types

/// What the server offers a client it accepts: the tunnel's shape and
/// addresses (FEC, UDP MTU and keepalive are settled by the engine).
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
#[derive(Clone)]
pub struct Offer {
    pub tap: bool,
    pub mtu: u16,
    pub full_frame_mtu: u16,
    pub server_ip: Option<String>,
    pub client_ip: Option<String>,
    pub prefixlen: Option<u8>,
}

#[pymethods]
impl Offer {
    #[new]
    #[pyo3(signature = (*, mtu, full_frame_mtu, tap = false, server_ip = None, client_ip = None, prefixlen = None))]
    fn new(
        mtu: u16,
        full_frame_mtu: u16,
        tap: bool,
        server_ip: Option<String>,
        client_ip: Option<String>,
        prefixlen: Option<u8>,
    ) -> PyResult<Self> {
        let o = Offer {
            tap,
            mtu,
            full_frame_mtu,
            server_ip,
            client_ip,
            prefixlen,
        };
        o.payload()?.validate().map_err(errors::handshake)?;
        Ok(o)
    }

    fn __repr__(&self) -> String {
        format!(
            "Offer(tap={}, mtu={}, full_frame_mtu={}, server_ip={:?}, client_ip={:?}, prefixlen={:?})",
            self.tap, self.mtu, self.full_frame_mtu, self.server_ip, self.client_ip, self.prefixlen
        )
    }
}

impl Offer {
    fn payload(&self) -> PyResult<hs::ServerConfigPayload> {
        Ok(hs::ServerConfigPayload {
            tap: self.tap,
            mtu: self.mtu,
            full_frame_mtu: self.full_frame_mtu,
            server_ip: parse_ip(self.server_ip.as_deref(), "server_ip")?,
            client_ip: parse_ip(self.client_ip.as_deref(), "client_ip")?,
            prefixlen: self.prefixlen,
            fec: None,
            // Filled in by the engine; valid placeholders for validation.
            udp_mtu: hs::MIN_UDP_MTU,
            keepalive_s: 1,
        })
    }
}

/// The tunnel as the server set it up for this client (from message 2).
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
#[derive(Clone)]
pub struct TunnelConfig {
    pub tap: bool,
    pub mtu: u16,
    pub full_frame_mtu: u16,
    pub server_ip: Option<String>,
    pub client_ip: Option<String>,
    pub prefixlen: Option<u8>,
    /// The server's sending FEC (data, parity), or None.
    pub fec: Option<(u8, u8)>,
    /// The UDP MTU and keepalive period (s) both sides use.
    pub udp_mtu: u16,
    pub keepalive: u16,
}

impl From<&hs::ServerConfigPayload> for TunnelConfig {
    fn from(c: &hs::ServerConfigPayload) -> Self {
        TunnelConfig {
            tap: c.tap,
            mtu: c.mtu,
            full_frame_mtu: c.full_frame_mtu,
            server_ip: c.server_ip.map(|i| i.to_string()),
            client_ip: c.client_ip.map(|i| i.to_string()),
            prefixlen: c.prefixlen,
            fec: c.fec,
            udp_mtu: c.udp_mtu,
            keepalive: c.keepalive_s,
        }
    }
}

#[pymethods]
impl TunnelConfig {
    fn __repr__(&self) -> String {
        format!(
            "TunnelConfig(tap={}, mtu={}, server_ip={:?}, client_ip={:?}, prefixlen={:?}, udp_mtu={}, keepalive={})",
            self.tap, self.mtu, self.server_ip, self.client_ip, self.prefixlen, self.udp_mtu, self.keepalive
        )
    }
}

// ------------------------------------------------------------ events

/// Server: an authenticated, fresh message 1; answer it with
/// `Endpoint.accept` or `Endpoint.refuse`.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct HandshakeRequest {
    pub pending_id: u64,
    /// Where it came from (host, port).
    pub peer: Addr,
    pub client_id: String,
    /// The client's interface MTU.
    pub mtu: u16,
    /// 0: the server assigns an address, 1: the client asks for `ip`, 2: none.
    pub ip_mode: u8,
    pub ip: Option<String>,
    pub fec: Option<(u8, u8)>,
    pub cipher: String,
    pub udp_mtu: u16,
    pub keepalive: u16,
    /// The client's clock when it sent message 1 (Unix ms).
    pub timestamp_ms: u64,
    /// Identity mode: the client's public key (base64), one of the peers;
    /// `client_id` and `ip` then come from its peer entry.
    pub client_key: Option<String>,
}

impl From<Request> for HandshakeRequest {
    fn from(r: Request) -> Self {
        let p = r.payload;
        HandshakeRequest {
            pending_id: r.pending_id,
            peer: addr_tuple(&r.from),
            client_id: p.client_id,
            mtu: p.mtu,
            ip_mode: p.ip_mode,
            ip: p.ip.map(|i| i.to_string()),
            fec: p.fec,
            cipher: p.cipher.name().to_string(),
            udp_mtu: p.udp_mtu,
            keepalive: p.keepalive_s,
            timestamp_ms: r.timestamp_ms,
            client_key: r.client_key.map(|k| hs::to_base64(&k)),
        }
    }
}

#[pymethods]
impl HandshakeRequest {
    /// A request as the engine would report it, for tests of the control
    /// plane's policy (the engine only answers requests it reported).
    #[new]
    #[pyo3(signature = (*, pending_id, peer, mtu, client_id = String::new(), ip_mode = 0, ip = None, fec = None, cipher = "aes".to_string(), udp_mtu = hs::MIN_UDP_MTU, keepalive = 10, timestamp_ms = 0, client_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        pending_id: u64,
        peer: Addr,
        mtu: u16,
        client_id: String,
        ip_mode: u8,
        ip: Option<String>,
        fec: Option<(u8, u8)>,
        cipher: String,
        udp_mtu: u16,
        keepalive: u16,
        timestamp_ms: u64,
        client_key: Option<String>,
    ) -> Self {
        HandshakeRequest {
            pending_id,
            peer,
            client_id,
            mtu,
            ip_mode,
            ip,
            fec,
            cipher,
            udp_mtu,
            keepalive,
            timestamp_ms,
            client_key,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "HandshakeRequest(pending_id={}, peer={:?}, client_id={:?}, ip_mode={}, ip={:?})",
            self.pending_id, self.peer, self.client_id, self.ip_mode, self.ip
        )
    }
}

/// Server: a message 1 turned away. At most a few are reported per second;
/// `suppressed` counts those left out since the last report.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct HandshakeRejected {
    pub peer: Addr,
    /// "auth", "stale", "replayed", "busy", "unusable" or "unknown-peer".
    pub kind: &'static str,
    pub reason: String,
    pub suppressed: u64,
}

/// Client: the server accepted. Set up the interface from `config`, then
/// `Endpoint.attach(session_id, fd)`.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct Connected {
    pub session_id: u32,
    pub server: Addr,
    pub config: TunnelConfig,
}

/// Client: the connection attempt ended without a session.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct ConnectFailed {
    /// "refused", "auth", "stale", "replayed", "no-answer" or "invalid".
    pub kind: &'static str,
    /// What happened and what to do, for the user.
    pub reason: String,
}

#[pymethods]
impl ConnectFailed {
    /// The matching exception of kcpvpn.errors, to raise or log.
    fn error(&self) -> PyErr {
        let m = self.reason.clone();
        match self.kind {
            "refused" => errors::Refused::new_err(m),
            "auth" => errors::AuthenticationFailed::new_err(m),
            "stale" => errors::StaleHandshake::new_err(m),
            "replayed" => errors::ReplayedHandshake::new_err(m),
            "no-answer" => errors::NoAnswer::new_err(m),
            _ => errors::InvalidParameter::new_err(m),
        }
    }
}

/// A session runs with its interface.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct SessionUp {
    pub session_id: u32,
}

/// Server: an accepted client proved it holds the session's keys (its
/// first authenticated datagram): now give it its interface (`attach`),
/// replace its older session and run hooks.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct SessionConfirmed {
    pub session_id: u32,
}

/// A session ended.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct SessionClosed {
    pub session_id: u32,
    /// "by-peer", "idle", "local", "replaced", "shutdown" or "interface-gone".
    pub kind: &'static str,
    /// The same, in words.
    pub reason: &'static str,
}

/// The peer's address changed (NAT rebinding, a new uplink).
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct PeerMoved {
    pub session_id: u32,
    pub peer: Addr,
}

/// The path drops datagrams of the agreed UDP MTU; `works` bytes got through.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct PathMtuProblem {
    pub session_id: u32,
    pub configured: usize,
    pub works: usize,
}

fn close_kind(r: CloseReason) -> &'static str {
    match r {
        CloseReason::ByPeer => "by-peer",
        CloseReason::IdleTimeout => "idle",
        CloseReason::Local => "local",
        CloseReason::Replaced => "replaced",
        CloseReason::Shutdown => "shutdown",
        CloseReason::InterfaceGone => "interface-gone",
    }
}

fn event_object(py: Python<'_>, ev: Event) -> PyResult<Py<PyAny>> {
    use kcpvpn_tunnel::endpoint::Rejection as R;
    Ok(match ev {
        Event::HandshakeRequested(r) => Py::new(py, HandshakeRequest::from(r))?.into_any(),
        Event::HandshakeRejected {
            from,
            reason,
            suppressed,
        } => {
            let kind = match reason {
                R::AuthFailed => "auth",
                R::Stale { .. } => "stale",
                R::Replayed => "replayed",
                R::Busy => "busy",
                R::Unusable(_) => "unusable",
                R::UnknownPeer(_) => "unknown-peer",
            };
            Py::new(
                py,
                HandshakeRejected {
                    peer: addr_tuple(&from),
                    kind,
                    reason: reason.to_string(),
                    suppressed,
                },
            )?
            .into_any()
        }
        Event::Connected {
            session_id,
            server,
            config,
            ..
        } => Py::new(
            py,
            Connected {
                session_id,
                server: addr_tuple(&server),
                config: TunnelConfig::from(&config),
            },
        )?
        .into_any(),
        Event::ConnectFailed(f) => {
            let kind = match f {
                ConnectFailure::Refused(_) => "refused",
                ConnectFailure::AuthFailed | ConnectFailure::ServerKeyMismatch => "auth",
                ConnectFailure::Stale => "stale",
                ConnectFailure::Replayed => "replayed",
                ConnectFailure::NoAnswer { .. } => "no-answer",
                ConnectFailure::Invalid(_) => "invalid",
            };
            Py::new(
                py,
                ConnectFailed {
                    kind,
                    reason: f.to_string(),
                },
            )?
            .into_any()
        }
        Event::SessionUp { session_id, .. } => Py::new(py, SessionUp { session_id })?.into_any(),
        Event::SessionConfirmed { session_id, .. } => {
            Py::new(py, SessionConfirmed { session_id })?.into_any()
        }
        Event::SessionClosed {
            session_id, reason, ..
        } => Py::new(
            py,
            SessionClosed {
                session_id,
                kind: close_kind(reason),
                reason: reason.describe(),
            },
        )?
        .into_any(),
        Event::PeerMoved { session_id, to } => Py::new(
            py,
            PeerMoved {
                session_id,
                peer: addr_tuple(&to),
            },
        )?
        .into_any(),
        Event::PathMtu {
            session_id,
            configured,
            works,
        } => Py::new(
            py,
            PathMtuProblem {
                session_id,
                configured,
                works,
            },
        )?
        .into_any(),
    })
}

// ------------------------------------------------------------ counters

/// Declares a frozen counters class with a getter per field and `to_dict`.
macro_rules! counters {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[pyclass(frozen, get_all, module = "kcpvpn._engine")]
        #[derive(Clone, Default)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }

        #[pymethods]
        impl $name {
            /// The figures as a dict (the status document's form).
            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let d = PyDict::new(py);
                $(d.set_item(stringify!($field), self.$field.clone())?;)*
                Ok(d)
            }
        }
    };
}

counters!(
    /// The endpoint's counters (the transport's and the handshake's).
    EndpointStats {
        datagrams_in: u64,
        datagrams_out: u64,
        /// Sealed datagrams for no session we have.
        unknown_session: u64,
        /// Too short, of an unknown type, or of a type this side never takes.
        malformed: u64,
        /// Larger than the agreed UDP MTU (dropped).
        oversize: u64,
        handshake_requests: u64,
        handshake_failures: u64,
        handshake_auth_failures: u64,
        handshake_stale: u64,
        handshake_replayed: u64,
        handshake_busy: u64,
        handshake_unusable: u64,
        hints_sent: u64,
        hints_suppressed: u64,
        unanswerable_sources: u64,
        handshake_rate_limited: u64,
        cookies_sent: u64,
        cookies_valid: u64,
        no_session_hints_sent: u64,
        no_session_hints_in: u64,
        reject_hints_in: u64,
        rehandshakes: u64,
        rehandshake_failures: u64,
        handshake_attempts: u64,
        forged_answers: u64,
        /// Packets the interface did not take (its queue was full, or it is down).
        tun_write_drops: u64,
        /// TUN offload (IFF_VNET_HDR): interfaces that have it (of those
        /// attached), super-packets read and the packets cut from them, reads
        /// dropped as malformed, merged writes and the packets they held.
        tun_offload_interfaces: u64,
        tun_interfaces: u64,
        tun_gso_reads: u64,
        tun_gso_segments: u64,
        tun_bad_reads: u64,
        tun_merged_writes: u64,
        tun_merged_segments: u64,
        gso_messages: u64,
        /// Datagrams not sent, in all and by reason.
        send_errors: u64,
        send_errors_full: u64,
        send_errors_unreachable: u64,
        send_errors_refused: u64,
        send_errors_too_big: u64,
        send_errors_bad_address: u64,
        send_errors_other: u64,
        /// Receive errors (ICMP errors queued on the socket, and the like).
        recv_errors: u64,
        /// Fake TCP (all 0 on UDP): connections opened (client) or proven
        /// (server), reopened after a reset or silence, resets received,
        /// SYNs out and in, keepalive probes, malformed or mis-checksummed
        /// segments, segments of no connection, far outside the window,
        /// datagrams with no connection to carry them, peers refused for a
        /// full flow table, connections now, datagrams dropped while
        /// connecting, packets that arrived holding several datagrams,
        /// datagrams sent in runs the kernel segments (the packet path).
        tcp_connects: u64,
        tcp_reconnects: u64,
        tcp_resets_in: u64,
        tcp_syns_out: u64,
        tcp_syns_in: u64,
        tcp_probes_out: u64,
        tcp_bad: u64,
        tcp_stray: u64,
        tcp_out_of_window: u64,
        tcp_no_connection: u64,
        tcp_table_full: u64,
        tcp_connections: u64,
        tcp_pending_dropped: u64,
        tcp_merged_in: u64,
        tcp_offload_out: u64,
        sessions: u64,
        sessions_started: u64,
        /// Turns of the data path's loop.
        loop_iterations: u64,
    }
);

counters!(
    /// One KCP conversation's counters and estimates.
    KcpStats {
        segments_sent: u64,
        segments_recv: u64,
        retransmits: u64,
        fast_retransmits: u64,
        unneeded_retransmits: u64,
        dup_segments: u64,
        out_of_window: u64,
        input_errors: u64,
        srtt_ms: u32,
        rttvar_ms: u32,
        rto_ms: u32,
        cwnd: u32,
        rmt_wnd: u32,
        snd_queue: u32,
        snd_inflight: u32,
        rcv_queue: u32,
        rcv_buf: u32,
        min_rtt_ms: u32,
        bandwidth_kbit: u64,
        cc_restarts: u64,
        early_deliveries: u64,
        cc_queue_corrections: u64,
        cc_queue_drains: u64,
        cc_trim_pct: u64,
    }
);

/// One session's counters.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
#[derive(Clone)]
pub struct SessionStats {
    pub session_id: u32,
    pub peer: Addr,
    /// The session has its interface.
    pub attached: bool,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub wire_bytes_in: u64,
    pub wire_bytes_out: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub malformed: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
    pub rapid_fec_flushes: u64,
    /// Padding messages sent in front of sparse flows' packets.
    pub sparse_markers: u64,
    /// Parity shards full groups get now (adaptive).
    pub fec_parity: f64,
    /// The smoothed loss estimate parity follows, parts per million.
    pub fec_loss_ppm: u64,
    pub feedback_in: u64,
    pub feedback_out: u64,
    pub fec_recovered: u64,
    /// FEC parity shards sent.
    pub parity_out: u64,
    /// Full FEC groups that carried interactive traffic and got the strict
    /// parity of a group closed early.
    pub protected_groups: u64,
    /// Full FEC groups of small datagrams (ACKs) given parity for a 1%
    /// failure target.
    pub small_groups: u64,
    /// Heap bytes the session's buffers hold (they shrink when it idles).
    pub heap_bytes: u64,
    /// Flow queueing: bytes waiting, CoDel's drops and ECN marks, drops at
    /// the byte limit, the last and the largest queue delay (ms), flows.
    pub queued_bytes: u64,
    pub codel_drops: u64,
    pub ecn_marks: u64,
    pub overflow_drops: u64,
    pub queue_delay_ms: u32,
    pub max_queue_delay_ms: u32,
    pub new_flows: u64,
    /// Messages that waited for an earlier one of their own flow (never
    /// for another flow's).
    pub flow_waits: u64,
    /// Its interface offloads (TSO reads, merged writes).
    pub offload: bool,
    pub fec_errors: u64,
    pub kcp_errors: u64,
    pub oversize_packets: u64,
    /// What the peer's loss reports add up to (measured loss of what we sent).
    pub peer_expected: u64,
    pub peer_lost: u64,
    /// The loss the peer measured in its reports of the last 5-10 s, ppm.
    pub loss_ppm: u64,
    pub probes_out: u64,
    pub probes_acked: u64,
    /// The largest datagram the path carried (0: not probed yet).
    pub path_mtu: u64,
    /// The key epoch we seal under and the key updates done (section 5.1);
    /// rekey messages ignored and datagrams under a key phase not held.
    pub key_epoch: u32,
    pub rekeys: u64,
    pub rekey_ignored: u64,
    pub unknown_key_phase: u64,
    pub kcp: KcpStats,
}

#[pymethods]
impl SessionStats {
    /// The figures as a dict (the status document's form).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        macro_rules! put {
            ($($f:ident),*) => { $(d.set_item(stringify!($f), self.$f.clone())?;)* };
        }
        put!(
            session_id,
            peer,
            attached,
            packets_in,
            packets_out,
            bytes_in,
            bytes_out,
            datagrams_in,
            datagrams_out,
            wire_bytes_in,
            wire_bytes_out,
            auth_failures,
            replays,
            malformed,
            keepalives_in,
            keepalives_out,
            rapid_fec_flushes,
            sparse_markers,
            fec_loss_ppm,
            feedback_in,
            feedback_out,
            fec_recovered,
            parity_out,
            protected_groups,
            small_groups,
            heap_bytes,
            queued_bytes,
            codel_drops,
            ecn_marks,
            overflow_drops,
            queue_delay_ms,
            max_queue_delay_ms,
            new_flows,
            flow_waits,
            offload,
            fec_errors,
            kcp_errors,
            oversize_packets,
            peer_expected,
            peer_lost,
            loss_ppm,
            probes_out,
            probes_acked,
            path_mtu,
            key_epoch,
            rekeys,
            rekey_ignored,
            unknown_key_phase
        );
        d.set_item("fec_parity", (self.fec_parity * 100.0).round() / 100.0)?;
        d.set_item("kcp", self.kcp.to_dict(py)?)?;
        Ok(d)
    }
}

/// Everything the data path counts: its own counters and each session's.
#[pyclass(frozen, get_all, module = "kcpvpn._engine")]
pub struct EngineStats {
    pub endpoint: EndpointStats,
    pub sessions: Vec<SessionStats>,
}

#[pymethods]
impl EngineStats {
    /// {"endpoint": {...}, "sessions": [{...}, ...]}
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("endpoint", self.endpoint.to_dict(py)?)?;
        let l = PyList::empty(py);
        for s in &self.sessions {
            l.append(s.to_dict(py)?)?;
        }
        d.set_item("sessions", l)?;
        Ok(d)
    }

    /// The counters of session `session_id`, or None.
    fn session(&self, session_id: u32) -> Option<SessionStats> {
        self.sessions
            .iter()
            .find(|s| s.session_id == session_id)
            .cloned()
    }
}

fn session_stats(s: &SessionSnapshot) -> SessionStats {
    let st = &s.stats;
    let k = &s.kcp;
    SessionStats {
        session_id: s.session_id,
        peer: addr_tuple(&s.peer),
        attached: s.attached,
        packets_in: st.packets_in,
        packets_out: st.packets_out,
        bytes_in: st.bytes_in,
        bytes_out: st.bytes_out,
        datagrams_in: st.datagrams_in,
        datagrams_out: st.datagrams_out,
        wire_bytes_in: st.wire_bytes_in,
        wire_bytes_out: st.wire_bytes_out,
        auth_failures: st.auth_failures,
        replays: st.replays,
        malformed: st.malformed,
        keepalives_in: st.keepalives_in,
        keepalives_out: st.keepalives_out,
        rapid_fec_flushes: st.rapid_fec_flushes,
        sparse_markers: st.sparse_markers,
        fec_parity: st.fec_parity,
        fec_loss_ppm: st.fec_loss_ppm,
        feedback_in: st.feedback_in,
        feedback_out: st.feedback_out,
        fec_recovered: s.fec_recovered,
        parity_out: s.parity_out,
        protected_groups: s.protected_groups,
        small_groups: s.small_groups,
        heap_bytes: s.heap_bytes,
        queued_bytes: s.queued_bytes,
        codel_drops: s.scheduler.codel_drops,
        ecn_marks: s.scheduler.ecn_marks,
        overflow_drops: s.scheduler.overflow_drops,
        queue_delay_ms: s.scheduler.last_sojourn_ms,
        max_queue_delay_ms: s.scheduler.max_sojourn_ms,
        new_flows: s.scheduler.new_flows,
        flow_waits: s.flow_waits,
        offload: s.offload,
        fec_errors: st.fec_errors,
        kcp_errors: st.kcp_errors,
        oversize_packets: st.oversize_packets,
        peer_expected: st.peer_expected,
        peer_lost: st.peer_lost,
        loss_ppm: st.loss_ppm,
        probes_out: st.probes_out,
        probes_acked: st.probes_acked,
        path_mtu: st.path_mtu,
        key_epoch: s.keys.epoch,
        rekeys: s.keys.rekeys,
        rekey_ignored: s.keys.rekey_ignored,
        unknown_key_phase: s.keys.unknown_phase,
        kcp: KcpStats {
            segments_sent: k.segments_sent,
            segments_recv: k.segments_recv,
            retransmits: k.retransmits,
            fast_retransmits: k.fast_retransmits,
            unneeded_retransmits: k.unneeded_retransmits,
            dup_segments: k.dup_segments,
            out_of_window: k.out_of_window,
            input_errors: k.input_errors,
            srtt_ms: k.srtt,
            rttvar_ms: k.rttvar,
            rto_ms: k.rto,
            cwnd: k.cwnd,
            rmt_wnd: k.rmt_wnd,
            snd_queue: k.snd_queue,
            snd_inflight: k.snd_inflight,
            rcv_queue: k.rcv_queue,
            rcv_buf: k.rcv_buf,
            min_rtt_ms: k.min_rtt,
            bandwidth_kbit: k.bandwidth_kbit,
            cc_restarts: k.cc_restarts,
            early_deliveries: k.early_deliveries,
            cc_queue_corrections: k.cc_queue_corrections,
            cc_queue_drains: k.cc_queue_drains,
            cc_trim_pct: k.cc_trim_pct,
        },
    }
}

fn engine_stats(s: &Snapshot) -> EngineStats {
    let e = &s.endpoint;
    let o = &s.outbound;
    let i = &s.inbound;
    let t = o.tcp.unwrap_or_default();
    EngineStats {
        endpoint: EndpointStats {
            datagrams_in: e.datagrams_in,
            datagrams_out: o.datagrams,
            unknown_session: e.unknown_session,
            malformed: e.malformed,
            oversize: i.oversize,
            handshake_requests: e.handshake_requests,
            handshake_failures: e.handshake_failures,
            handshake_auth_failures: e.handshake_auth_failures,
            handshake_stale: e.handshake_stale,
            handshake_replayed: e.handshake_replayed,
            handshake_busy: e.handshake_busy,
            handshake_unusable: e.handshake_unusable,
            hints_sent: e.hints_sent,
            hints_suppressed: e.hints_suppressed,
            unanswerable_sources: e.unanswerable_sources,
            handshake_rate_limited: e.handshake_rate_limited,
            cookies_sent: e.cookies_sent,
            cookies_valid: e.cookies_valid,
            no_session_hints_sent: e.no_session_hints_sent,
            no_session_hints_in: e.no_session_hints_in,
            reject_hints_in: e.reject_hints_in,
            rehandshakes: e.rehandshakes,
            rehandshake_failures: e.rehandshake_failures,
            handshake_attempts: e.handshake_attempts,
            forged_answers: e.forged_answers,
            tun_write_drops: e.delivery_drops + s.tun.write_drops,
            tun_offload_interfaces: s.tun.offload_interfaces,
            tun_interfaces: s.tun.interfaces,
            tun_gso_reads: s.tun.gso_reads,
            tun_gso_segments: s.tun.gso_segments,
            tun_bad_reads: s.tun.bad_reads,
            tun_merged_writes: s.tun.merged_writes,
            tun_merged_segments: s.tun.merged_segments,
            gso_messages: o.gso_messages,
            send_errors: o.errors.total(),
            send_errors_full: o.errors.full,
            send_errors_unreachable: o.errors.unreachable,
            send_errors_refused: o.errors.refused,
            send_errors_too_big: o.errors.too_big,
            send_errors_bad_address: o.errors.bad_address,
            send_errors_other: o.errors.other,
            recv_errors: i.errors.total(),
            tcp_connects: t.connects,
            tcp_reconnects: t.reconnects,
            tcp_resets_in: t.resets_in,
            tcp_syns_out: t.syns_out,
            tcp_syns_in: t.syns_in,
            tcp_probes_out: t.probes_out,
            tcp_bad: t.bad,
            tcp_stray: t.stray,
            tcp_out_of_window: t.out_of_window,
            tcp_no_connection: t.no_connection,
            tcp_table_full: t.table_full,
            tcp_connections: t.connections,
            tcp_pending_dropped: t.pending_dropped,
            tcp_merged_in: t.merged_in,
            tcp_offload_out: t.offload_out,
            sessions: e.sessions,
            sessions_started: e.sessions_started,
            loop_iterations: s.turns,
        },
        sessions: s.sessions.iter().map(session_stats).collect(),
    }
}

// ------------------------------------------------------------ the endpoint

/// The native data path: a UDP socket, the sessions and their interfaces,
/// run by one native thread.
#[pyclass(frozen, module = "kcpvpn._engine")]
pub struct Endpoint {
    inner: DriverHandle,
}

fn start(fd: i32, role: Role, params: &SessionParams) -> PyResult<Endpoint> {
    let fd = take_fd(fd)?;
    let udp = Udp::new(fd, params.inner.udp_mtu as usize)
        .map_err(|e| errors::engine(format!("cannot start the data path: {e}")))?;
    start_on(udp, role, params)
}

/// A fake-TCP data path (raw sockets; see docs/protocol.md).
fn start_tcp(
    tcp: TcpRole,
    role: Role,
    params: &SessionParams,
    dscp: u8,
    sockbuf: i32,
) -> PyResult<Endpoint> {
    let t = Tcp::new(TcpConfig {
        role: tcp,
        max_datagram: params.inner.udp_mtu as usize,
        tos: dscp << 2,
        sockbuf,
    })
    .map_err(|e| errors::engine(format!("cannot start the fake-TCP data path: {e}")))?;
    start_on(t, role, params)
}

fn start_on<T: kcpvpn_tunnel::transport::Transport>(
    transport: T,
    role: Role,
    params: &SessionParams,
) -> PyResult<Endpoint> {
    let mut seed = [0u8; 8];
    getrandom(&mut seed);
    let inner = DriverHandle::start(
        transport,
        EndpointConfig {
            role,
            params: params.inner.clone(),
            seed: u64::from_le_bytes(seed),
        },
    )
    .map_err(|e| errors::engine(format!("cannot start the data path: {e}")))?;
    Ok(Endpoint { inner })
}

/// Fills `buf` from the kernel's random source (session ids and jitter
/// need to be unpredictable across restarts, not secret).
fn getrandom(buf: &mut [u8]) {
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64) << 32;
        buf.copy_from_slice(&t.to_le_bytes()[..buf.len().min(8)]);
    }
}

fn wait_reply<T: Send>(py: Python<'_>, rx: mpsc::Receiver<T>) -> PyResult<T> {
    py.detach(move || rx.recv_timeout(REPLY_TIMEOUT))
        .map_err(|_| errors::engine("the data path did not answer (stopped or wedged)"))
}

#[pymethods]
impl Endpoint {
    /// A server on `fd` (a bound UDP socket, dup'ed for us).
    #[staticmethod]
    /// Identity mode with `private_key` (32 bytes): only `peers` get in,
    /// each a (public key, client id, fixed address or None).
    #[pyo3(signature = (fd, psk, params, handshake_max_age_ms = hs::DEFAULT_MAX_AGE_MS, *, private_key = None, peers = Vec::new()))]
    fn server(
        fd: i32,
        psk: &Psk,
        params: &SessionParams,
        handshake_max_age_ms: u64,
        private_key: Option<Vec<u8>>,
        peers: Vec<PeerSpec>,
    ) -> PyResult<Self> {
        let responder = server_responder(psk, handshake_max_age_ms, private_key.as_deref(), peers)?;
        start(fd, Role::Server { responder }, params)
    }

    /// A client on `fd` (its UDP socket, dup'ed for us); identity mode with
    /// its `private_key` and the `server_public_key` it pins.
    #[staticmethod]
    #[pyo3(signature = (fd, psk, params, *, private_key = None, server_public_key = None))]
    fn client(
        fd: i32,
        psk: &Psk,
        params: &SessionParams,
        private_key: Option<Vec<u8>>,
        server_public_key: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let identity = client_identity(private_key.as_deref(), server_public_key.as_deref())?;
        start(
            fd,
            Role::Client {
                psk: psk.0,
                identity,
            },
            params,
        )
    }

    /// A fake-TCP server on `port` (raw sockets of the families asked for;
    /// the caller keeps the host's stack from resetting the flows).
    #[staticmethod]
    #[pyo3(signature = (port, psk, params, *, ipv4 = true, ipv6 = true, dscp = 0, sockbuf = 4 << 20, handshake_max_age_ms = hs::DEFAULT_MAX_AGE_MS, private_key = None, peers = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn server_tcp(
        port: u16,
        psk: &Psk,
        params: &SessionParams,
        ipv4: bool,
        ipv6: bool,
        dscp: u8,
        sockbuf: i32,
        handshake_max_age_ms: u64,
        private_key: Option<Vec<u8>>,
        peers: Vec<PeerSpec>,
    ) -> PyResult<Self> {
        if !ipv4 && !ipv6 {
            return Err(errors::engine("a fake-TCP server needs IPv4, IPv6 or both"));
        }
        let responder = server_responder(psk, handshake_max_age_ms, private_key.as_deref(), peers)?;
        start_tcp(
            TcpRole::Server { port, ipv4, ipv6 },
            Role::Server { responder },
            params,
            dscp,
            sockbuf,
        )
    }

    /// A fake-TCP client of `server` (it connects on the first datagram,
    /// and again whenever the connection is lost).
    #[staticmethod]
    #[pyo3(signature = (server, psk, params, *, dscp = 0, sockbuf = 4 << 20, private_key = None, server_public_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn client_tcp(
        server: Addr,
        psk: &Psk,
        params: &SessionParams,
        dscp: u8,
        sockbuf: i32,
        private_key: Option<Vec<u8>>,
        server_public_key: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let identity = client_identity(private_key.as_deref(), server_public_key.as_deref())?;
        start_tcp(
            TcpRole::Client {
                server: sockaddr(&server)?,
            },
            Role::Client {
                psk: psk.0,
                identity,
            },
            params,
            dscp,
            sockbuf,
        )
    }

    /// Readable when events wait.
    fn event_fd(&self) -> i32 {
        self.inner.event_fd()
    }

    fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// The events since the last call (HandshakeRequest, HandshakeRejected,
    /// Connected, ConnectFailed, SessionUp, SessionClosed, PeerMoved,
    /// PathMtuProblem).
    fn events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .take_events()
            .into_iter()
            .map(|e| event_object(py, e))
            .collect()
    }

    /// Client: connects to `server`, sending a fresh message 1 every second
    /// until one is answered (at most `max_attempts`, or forever). A
    /// `Connected` or `ConnectFailed` event follows.
    #[pyo3(signature = (server, *, mtu, client_id = String::new(), ip_mode = hs::IP_MODE_SERVER_ASSIGNS, ip = None, max_attempts = None))]
    fn connect(
        &self,
        server: Addr,
        mtu: u16,
        client_id: String,
        ip_mode: u8,
        ip: Option<String>,
        max_attempts: Option<u32>,
    ) -> PyResult<()> {
        let payload = hs::InitPayload {
            client_id,
            mtu,
            ip_mode,
            ip: parse_ip(ip.as_deref(), "ip")?,
            fec: None,
            cipher: Default::default(),
            udp_mtu: hs::MIN_UDP_MTU,
            keepalive_s: 1,
        };
        payload.validate().map_err(errors::handshake)?;
        self.inner.command(Command::Connect {
            server: sockaddr(&server)?,
            payload,
            max_attempts,
        });
        Ok(())
    }

    /// Client: stops connecting.
    fn cancel_connect(&self) {
        self.inner.command(Command::CancelConnect);
    }

    /// The interface of session `session_id` (a dup'ed descriptor): client,
    /// once connected; server, once confirmed. What arrived meanwhile is
    /// delivered to it now.
    fn attach(&self, py: Python<'_>, session_id: u32, tun_fd: i32) -> PyResult<()> {
        let tun = take_fd(tun_fd)?;
        let (reply, rx) = mpsc::channel();
        self.inner.command(Command::Attach {
            session_id,
            tun,
            reply,
        });
        wait_reply(py, rx)?.map_err(errors::engine)
    }

    /// Server: accepts `request` with `offer`; returns the new session's
    /// id. Without `tun_fd` the interface comes later (`attach`), once the
    /// client proved itself (SessionConfirmed); with it (a dup'ed
    /// descriptor) the session is attached at once. NotPending if the
    /// request expired; EngineError if the session cannot run (the client
    /// was told why).
    #[pyo3(signature = (request, offer, tun_fd = None))]
    fn accept(
        &self,
        py: Python<'_>,
        request: &HandshakeRequest,
        offer: &Offer,
        tun_fd: Option<i32>,
    ) -> PyResult<u32> {
        let offer = offer.payload()?;
        let tun = tun_fd.map(take_fd).transpose()?;
        let (reply, rx) = mpsc::channel();
        self.inner.command(Command::Accept {
            pending_id: request.pending_id,
            offer,
            tun,
            reply,
        });
        wait_reply(py, rx)?.map_err(|e| match e {
            AcceptError::NotPending => errors::NotPending::new_err(e.to_string()),
            other => errors::engine(other),
        })
    }

    /// Server: refuses `request`; the client shows `reason`.
    fn refuse(&self, request: &HandshakeRequest, reason: String) {
        self.inner.command(Command::Refuse {
            pending_id: request.pending_id,
            reason,
        });
    }

    /// Server in identity mode: replaces the peers (SIGHUP); the private key
    /// must be the one the endpoint started with. Sessions of peers that are
    /// gone stay until `close`d.
    fn set_peers(&self, private_key: Vec<u8>, peers: Vec<PeerSpec>) -> PyResult<()> {
        let identity = server_identity(&private_key, peers)?;
        self.inner.command(Command::SetPeers { identity });
        Ok(())
    }

    /// Ends a session (the peer is told; a SessionClosed event follows).
    fn close(&self, session_id: u32) {
        self.inner.command(Command::Close { session_id });
    }

    /// The counters (refreshed every 250 ms).
    fn stats(&self) -> EngineStats {
        self.inner.with_snapshot(engine_stats)
    }

    /// Stops the data path; each session says goodbye first.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.stop())
            .map_err(|e| errors::engine(format!("data path failed: {e}")))
    }
}
