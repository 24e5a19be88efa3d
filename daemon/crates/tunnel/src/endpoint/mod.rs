//! The endpoint, sans-IO: every protocol decision between the transport and
//! the sessions. It owns both sides of the handshake (the server's responder
//! and pending requests, the client's attempts and retries), demultiplexes
//! datagrams by receiver id, follows roaming peers, runs every session's
//! timers, rate-limits what it says to unauthenticated sources, and reports
//! what the control plane must know as [`Event`]s.
//!
//! Nothing here reads a clock, touches a socket or an interface: time comes
//! in as [`Now`], datagrams come in through [`Endpoint::handle`], packets
//! from interfaces through [`Endpoint::send_packet`], and everything that
//! goes out leaves through the caller's [`Io`]. The driver (`crate::driver`)
//! is a thin loop around it; the simulation tests (`tests/endpoint.rs`)
//! drive it with a seeded clock and a lossy, reordering, forging network.
//!
//! Model: quinn-proto's `Endpoint` (handle / poll_timeout / events).
pub mod handshake;
pub mod limits;
pub mod messages;

use crate::params::{ParamError, SessionParams, Terms};
use crate::session::{Closed, Received, Session, SessionStats, Transmit};
use handshake::{Answer, Connector, ServerSide};
use kcpvpn_crypto::handshake::{
    to_base64, ClientIdentity, HandshakeError, HandshakeOutcome, InitPayload, Responder,
    ServerConfigPayload,
};
use kcpvpn_crypto::packet;
use limits::{Cookies, Reporter, SourceLimiter, TokenBucket};
use messages::{MessageType, RejectCode};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// The time, passed in: a monotonic clock for timers and the wall clock
/// for handshake freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin; never goes back).
    pub ms: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The session clock: KCP's wrapping 32-bit milliseconds.
    #[inline]
    fn ms32(self) -> u32 {
        self.ms as u32
    }
}

/// A session's place in the endpoint (stable while the session lives;
/// drivers index their interfaces with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub usize);

/// Where the endpoint's output goes: datagrams to the transport, packets to
/// the sessions' interfaces.
pub trait Io {
    /// An empty buffer for the next datagram (write it, then `send`).
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Sends what was written into `buf`.
    fn send(&mut self, to: SocketAddr);
    /// A packet or frame for session `h`'s interface; false if it was dropped.
    fn deliver(&mut self, h: Handle, packet: &[u8]) -> bool;
}

/// Adapts an `Io` to a session's `Transmit`, for one destination.
struct To<'a> {
    io: &'a mut dyn Io,
    addr: SocketAddr,
}

impl Transmit for To<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.io.buf()
    }
    fn commit(&mut self) {
        self.io.send(self.addr);
    }
}

fn send_raw(io: &mut dyn Io, to: SocketAddr, bytes: &[u8]) {
    io.buf().extend_from_slice(bytes);
    io.send(to);
}

/// Which side of the handshake this endpoint is.
// Built once per endpoint and moved into it: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Role {
    /// Answers handshakes (the responder holds the stretched secret).
    Server { responder: Responder },
    /// Starts them, with the stretched secret, and in identity mode with
    /// its static key and the server's pinned public key.
    Client {
        psk: [u8; 32],
        identity: Option<ClientIdentity>,
    },
}

pub struct EndpointConfig {
    pub role: Role,
    /// This side's transport settings.
    pub params: SessionParams,
    /// Seeds session ids and retry jitter (the driver takes it from the OS;
    /// simulations fix it).
    pub seed: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer said goodbye.
    ByPeer,
    /// Nothing authenticated from the peer for the idle timeout.
    IdleTimeout,
    /// The control plane closed it.
    Local,
    /// A new session of the same client took its place.
    Replaced,
    /// The endpoint is shutting down.
    Shutdown,
    /// The session's interface was deleted or broke underneath.
    InterfaceGone,
}

impl CloseReason {
    pub fn describe(self) -> &'static str {
        match self {
            CloseReason::ByPeer => "closed by peer",
            CloseReason::IdleTimeout => "peer silent (keepalive timeout)",
            CloseReason::Local => "closed locally",
            CloseReason::Replaced => "replaced by a new connection",
            CloseReason::Shutdown => "shutting down",
            CloseReason::InterfaceGone => "its interface was deleted or failed",
        }
    }
}

impl From<Closed> for CloseReason {
    fn from(c: Closed) -> Self {
        match c {
            Closed::ByPeer => CloseReason::ByPeer,
            Closed::IdleTimeout => CloseReason::IdleTimeout,
        }
    }
}

/// Why the server did not take a message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It did not authenticate: another secret, or forged.
    AuthFailed,
    /// Its timestamp is too far from our clock.
    Stale { skew_ms: i64 },
    /// Seen before.
    Replayed,
    /// Too many requests waiting for the control plane, or the replay
    /// cache is full. (A retry while the same source's request waits is
    /// counted as busy too, without an event.)
    Busy,
    /// Authenticated, but asks for what this server cannot run.
    Unusable(String),
    /// Identity mode: authenticated with a key that is not one of the
    /// server's peers (counted as an authentication failure; the client
    /// was told, in an authenticated refusal).
    UnknownPeer([u8; 32]),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::AuthFailed => f.write_str(
                "authentication failed (the client has another secret, or the message was forged)",
            ),
            Rejection::Stale { skew_ms } => write!(
                f,
                "stale: the client's clock is {skew_ms} ms away from ours (sync both clocks, e.g. with NTP)"
            ),
            Rejection::Replayed => f.write_str("replayed message 1"),
            Rejection::Busy => f.write_str("too many handshakes in progress"),
            Rejection::Unusable(why) => write!(f, "cannot serve it: {why}"),
            Rejection::UnknownPeer(key) => write!(
                f,
                "unknown client key {}: not one of the server's peers (add it there to let this client in)",
                to_base64(key)
            ),
        }
    }
}

/// How a client's connection attempt ended without a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The server answered no, with its reason (authenticated).
    Refused(String),
    /// The server says it cannot authenticate us (an unauthenticated hint).
    AuthFailed,
    /// Identity mode: the same, which there means the server cannot even
    /// read our message 1 (most likely the pinned server key is not its key).
    ServerKeyMismatch,
    /// The server says our clock is off (an unauthenticated hint).
    Stale,
    /// The server saw our message 1 before (an unauthenticated hint).
    Replayed,
    /// No answer after the last attempt.
    NoAnswer { attempts: u32 },
    /// Our own parameters cannot be sent.
    Invalid(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused(r) => write!(f, "the server refused the connection: {r}"),
            ConnectFailure::AuthFailed => f.write_str(
                "authentication failed: the server does not share our secret (check --secret / KCPVPN_KEY and --network on both sides, and that both run simple mode)",
            ),
            ConnectFailure::ServerKeyMismatch => f.write_str(
                "the handshake cannot complete: the server could not read our message 1, so it does not hold the private key of the \
                 --server-public-key we pin (check that key: `kcpvpn pubkey` on the server's private key prints it), or it does \
                 not run identity mode, or its secret (KCPVPN_KEY) or --network differs from ours",
            ),
            ConnectFailure::Stale => f.write_str(
                "the server refused our handshake as stale: the clocks of client and server differ by more than a minute (sync them, e.g. with NTP)",
            ),
            ConnectFailure::Replayed => f.write_str("the server refused our handshake as a replay"),
            ConnectFailure::NoAnswer { attempts } => write!(
                f,
                "no answer after {attempts} attempts: is the server running and reachable, and does the path allow UDP?"
            ),
            ConnectFailure::Invalid(why) => write!(f, "cannot start a handshake: {why}"),
        }
    }
}

/// An authenticated, fresh message 1 awaiting the control plane.
#[derive(Debug, Clone)]
pub struct Request {
    pub pending_id: u64,
    pub from: SocketAddr,
    /// The client's receive session id.
    pub sender_id: u32,
    pub timestamp_ms: u64,
    /// Identity mode: the client's static public key (one of the peers).
    pub client_key: Option<[u8; 32]>,
    pub payload: InitPayload,
}

/// What the control plane hears about.
#[derive(Debug, Clone)]
pub enum Event {
    /// Server: decide with `accept` or `refuse`.
    HandshakeRequested(Request),
    /// Server: a message 1 was turned away (at most a few per second are
    /// reported; `suppressed` counts the ones since the last report).
    HandshakeRejected {
        from: SocketAddr,
        reason: Rejection,
        suppressed: u64,
    },
    /// Client: the server accepted. The session is installed and receiving;
    /// set up the interface and `attach` it.
    Connected {
        session_id: u32,
        handle: Handle,
        server: SocketAddr,
        config: ServerConfigPayload,
    },
    /// Client: the connection attempt ended without a session.
    ConnectFailed(ConnectFailure),
    /// A session runs with its interface.
    SessionUp { session_id: u32, handle: Handle },
    /// Server: an accepted session's client proved it holds the keys (its
    /// first authenticated datagram). Only now may it replace an older
    /// session of the same client, get its interface (`attach`) and run
    /// hooks: a replayed message 1 gets as far as an answer and stops here.
    SessionConfirmed { session_id: u32, handle: Handle },
    SessionClosed {
        session_id: u32,
        handle: Handle,
        reason: CloseReason,
    },
    /// The peer's address changed (NAT rebinding, a new uplink).
    PeerMoved { session_id: u32, to: SocketAddr },
    /// The path drops datagrams of the agreed size; `works` got through.
    PathMtu {
        session_id: u32,
        configured: usize,
        works: usize,
    },
}

/// Endpoint counters (each session has its own in [`SessionStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams_in: u64,
    /// Sealed datagrams for no session we have.
    pub unknown_session: u64,
    /// Too short, of an unknown type, or of a type this side never takes.
    pub malformed: u64,
    /// Authenticated message 1s handed to the control plane.
    pub handshake_requests: u64,
    /// Message 1s turned away, all reasons.
    pub handshake_failures: u64,
    pub handshake_auth_failures: u64,
    pub handshake_stale: u64,
    pub handshake_replayed: u64,
    pub handshake_busy: u64,
    pub handshake_unusable: u64,
    /// Reject hints sent, and the ones the rate limit held back.
    pub hints_sent: u64,
    pub hints_suppressed: u64,
    /// Replies not sent because the source cannot be a peer (port 0,
    /// broadcast, multicast, unspecified).
    pub unanswerable_sources: u64,
    /// Message 1s dropped by the per-source limit before any cryptography.
    pub handshake_rate_limited: u64,
    /// Under load: cookies sent, and message 1s that carried a good one.
    pub cookies_sent: u64,
    pub cookies_valid: u64,
    /// Client: reject hints taken (from the server's address, about one of
    /// our attempts; they end an attempt only as `HINTED_ATTEMPTS` says).
    pub reject_hints_in: u64,
    /// No-session hints sent (server) and taken (client).
    pub no_session_hints_sent: u64,
    pub no_session_hints_in: u64,
    /// Client: handshakes started because the server lost our session, and
    /// the ones that did not complete (the session stays as it was).
    pub rehandshakes: u64,
    pub rehandshake_failures: u64,
    /// Client: message 1s sent, and answers that failed authentication.
    pub handshake_attempts: u64,
    pub forged_answers: u64,
    /// Packets a session gave for an interface that was not taken.
    pub delivery_drops: u64,
    /// Sessions ever started and now running.
    pub sessions_started: u64,
    pub sessions: u64,
}

/// Reject hints per second (each answers one message 1 and is smaller, so
/// the server cannot be used to amplify; the limit caps reflection).
pub const REJECT_HINTS_PER_SEC: u32 = 20;
/// `HandshakeRejected` events per second (they become log lines).
pub const REJECTION_REPORTS_PER_SEC: u32 = 2;
/// No-session hints per second, in all (each is smaller than the sealed
/// datagram it answers).
pub const NO_SESSION_HINTS_PER_SEC: u32 = 50;
/// A client checks a no-session hint with a new handshake at most this often (ms).
pub const REHANDSHAKE_MIN_GAP_MS: u64 = 5000;
/// Attempts of such a check before the session is left to its idle timeout.
pub const REHANDSHAKE_ATTEMPTS: u32 = 10;
/// A session the client has not confirmed with a first datagram within
/// this long is given up (ms): its answer was lost and the client tried
/// again (a newer session), or the client went away.
pub const CONFIRM_TIMEOUT_MS: u32 = 10_000;
/// Retry jitter: up to this share of `RETRY_MS` is added to each retry.
const RETRY_JITTER: u64 = handshake::RETRY_MS / 10;

struct Slot {
    id: u32,
    session: Session,
    addr: SocketAddr,
    /// The interface is there: deliver to it and read from it.
    attached: bool,
    /// Earliest live timer entry of this slot (`u64::MAX`: none).
    deadline: u64,
    dirty: bool,
    /// The session stopped taking packets; tell the driver when it does again.
    blocked: bool,
}

/// SplitMix64: session ids and jitter. Ids need to be unique, not secret:
/// every datagram is authenticated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A read-only view of one session, for counters and status.
pub struct SessionView<'a> {
    pub handle: Handle,
    pub session_id: u32,
    pub peer: SocketAddr,
    pub attached: bool,
    pub session: &'a Session,
}

impl SessionView<'_> {
    pub fn stats(&self) -> &SessionStats {
        &self.session.stats
    }
}

pub struct Endpoint {
    params: SessionParams,
    server: Option<ServerSide>,
    psk: Option<[u8; 32]>,
    identity: Option<ClientIdentity>,
    connector: Option<Connector>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u32, usize>,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    dirty: Vec<usize>,
    resumed: Vec<Handle>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    hints: TokenBucket,
    rejections: Reporter,
    rng: Rng,
    sources: SourceLimiter,
    cookies: Cookies,
    no_session_hints: TokenBucket,
    /// This host's own addresses with our port: never answered (a forged
    /// source would make the server talk to itself).
    own: Vec<SocketAddr>,
    broadcast: Vec<IpAddr>,
    /// Client: what `connect` asked for last (to check the session with).
    last_payload: Option<InitPayload>,
    rehandshake_not_before: u64,
}

/// Equal addresses, an IPv4 address and its IPv6-mapped form being equal.
fn same_addr(a: &SocketAddr, b: &SocketAddr) -> bool {
    let canon = |x: &SocketAddr| match x.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(x.ip(), IpAddr::V4),
        ip => ip,
    };
    a.port() == b.port() && canon(a) == canon(b)
}

/// True for a source we may answer: a unicast address with a port. Anything
/// else is forged (a reply would go to a whole subnet, or nowhere).
pub fn answerable(a: &SocketAddr) -> bool {
    if a.port() == 0 {
        return false;
    }
    match a.ip() {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
            None => !(v6.is_unspecified() || v6.is_multicast()),
        },
    }
}

impl Endpoint {
    pub fn new(cfg: EndpointConfig) -> Endpoint {
        let (server, psk, identity) = match cfg.role {
            Role::Server { responder } => (Some(ServerSide::new(responder)), None, None),
            Role::Client { psk, identity } => (None, Some(psk), identity),
        };
        Endpoint {
            params: cfg.params,
            server,
            psk,
            identity,
            connector: None,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            resumed: Vec::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            hints: TokenBucket::new(REJECT_HINTS_PER_SEC, REJECT_HINTS_PER_SEC),
            rejections: Reporter::new(REJECTION_REPORTS_PER_SEC, 5),
            rng: Rng(cfg.seed),
            sources: SourceLimiter::new(
                limits::HANDSHAKES_PER_SOURCE,
                limits::HANDSHAKES_PER_SOURCE,
            ),
            cookies: Cookies::new(cfg.seed.rotate_left(17) ^ 0x6b63_7076, 0),
            no_session_hints: TokenBucket::new(NO_SESSION_HINTS_PER_SEC, NO_SESSION_HINTS_PER_SEC),
            own: Vec::new(),
            broadcast: Vec::new(),
            last_payload: None,
            rehandshake_not_before: 0,
        }
    }

    /// This host's addresses with the endpoint's port, and its subnets'
    /// broadcast addresses, refreshed by the driver: datagrams claiming to
    /// come from them are never answered.
    pub fn set_own_addresses(&mut self, own: Vec<SocketAddr>, broadcast: Vec<IpAddr>) {
        self.own = own;
        self.broadcast = broadcast;
    }

    fn may_answer(&self, a: &SocketAddr) -> bool {
        let canon = match a.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a.ip(), IpAddr::V4),
            ip => ip,
        };
        answerable(a)
            && !self.own.iter().any(|o| same_addr(o, a))
            && !self.broadcast.contains(&canon)
    }

    /// Server in identity mode: replaces its peers (the control plane
    /// closes the sessions of peers that are gone). False if this endpoint
    /// is not an identity-mode server.
    pub fn set_server_identity(
        &mut self,
        identity: kcpvpn_crypto::handshake::ServerIdentity,
    ) -> bool {
        match self.server.as_mut() {
            Some(s) if s.responder.identity().is_some() => {
                s.responder.set_identity(identity);
                true
            }
            _ => false,
        }
    }

    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    pub fn is_server(&self) -> bool {
        self.server.is_some()
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Counts packets the driver could not hand to an interface.
    pub fn count_delivery_drops(&mut self, n: u64) {
        self.stats.delivery_drops += n;
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sessions whose interface may be read again (they had stopped taking packets).
    pub fn poll_resumed(&mut self) -> Option<Handle> {
        self.resumed.pop()
    }

    pub fn handle_of(&self, session_id: u32) -> Option<Handle> {
        self.by_id.get(&session_id).map(|&i| Handle(i))
    }

    pub fn sessions(&self) -> impl Iterator<Item = SessionView<'_>> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref().map(|s| SessionView {
                handle: Handle(i),
                session_id: s.id,
                peer: s.addr,
                attached: s.attached,
                session: &s.session,
            })
        })
    }

    pub fn session(&self, h: Handle) -> Option<SessionView<'_>> {
        self.slots.get(h.0)?.as_ref().map(|s| SessionView {
            handle: h,
            session_id: s.id,
            peer: s.addr,
            attached: s.attached,
            session: &s.session,
        })
    }

    // ------------------------------------------------------------ input

    /// One datagram from the transport.
    pub fn handle(&mut self, now: Now, from: SocketAddr, dgram: &mut [u8], io: &mut dyn Io) {
        self.stats.datagrams_in += 1;
        match MessageType::of(dgram) {
            Some(t) if t.is_sealed() => self.on_sealed(now, from, dgram, io),
            Some(MessageType::HandshakeInit) if self.server.is_some() => {
                self.on_init(now, from, dgram, io)
            }
            Some(MessageType::HandshakeResponse) if self.connector.is_some() => {
                self.on_response(now, from, dgram, io)
            }
            Some(MessageType::Reject) if self.connector.is_some() => self.on_hint(from, dgram),
            Some(MessageType::Cookie) if self.connector.is_some() => {
                self.on_cookie(now, from, dgram, io)
            }
            Some(MessageType::NoSession) if self.psk.is_some() => {
                self.on_no_session(now, from, dgram, io)
            }
            _ => self.stats.malformed += 1,
        }
    }

    fn on_sealed(&mut self, now: Now, from: SocketAddr, dgram: &mut [u8], io: &mut dyn Io) {
        let Some(hdr) = packet::peek_header(dgram) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(&idx) = self.by_id.get(&hdr.receiver_id) else {
            self.stats.unknown_session += 1;
            // A server that lost the session (it restarted) says so, so the
            // client checks at once instead of after its idle timeout.
            if self.server.is_some() && self.may_answer(&from) && self.no_session_hints.take(now.ms)
            {
                self.stats.no_session_hints_sent += 1;
                send_raw(io, from, &messages::encode_no_session(hdr.receiver_id));
            }
            return;
        };
        let slot = self.slots[idx].as_mut().expect("by_id names live slots");
        let h = Handle(idx);
        let attached = slot.attached;
        let was_waiting = slot.session.awaiting_peer();
        let mut drops = 0;
        let got = slot.session.input(dgram, now.ms32(), &mut |pkt: &[u8]| {
            if !attached || !io.deliver(h, pkt) {
                drops += 1;
            }
        });
        self.stats.delivery_drops += drops;
        if got == Received::Dropped {
            return;
        }
        let confirmed = was_waiting && !slot.session.awaiting_peer();
        let id = slot.id;
        // Follow the peer to a new address on the newest authenticated
        // datagram only, so a delayed old one can't pull it back.
        if slot.session.last_was_newest() && from != slot.addr {
            slot.addr = from;
            self.events.push_back(Event::PeerMoved {
                session_id: id,
                to: from,
            });
        }
        self.mark_dirty(idx);
        if confirmed {
            if self.server.is_some() {
                self.events.push_back(Event::SessionConfirmed {
                    session_id: id,
                    handle: h,
                });
            }
            self.replace_older(idx, from, io);
        }
    }

    /// A session just proved itself: any other session at the same address
    /// (one socket runs one session) is a leftover of an earlier attempt
    /// whose answer was lost, or of a client restarted on the same port.
    fn replace_older(&mut self, idx: usize, addr: SocketAddr, io: &mut dyn Io) {
        let older: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != idx && s.as_ref().is_some_and(|s| s.addr == addr))
            .map(|(i, _)| i)
            .collect();
        for i in older {
            self.close(Handle(i), CloseReason::Replaced, io);
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(s) = self.slots[idx].as_mut() {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn reject(&mut self, now: Now, from: SocketAddr, reason: Rejection) {
        let s = &mut self.stats;
        s.handshake_failures += 1;
        match reason {
            Rejection::AuthFailed => s.handshake_auth_failures += 1,
            Rejection::Stale { .. } => s.handshake_stale += 1,
            Rejection::Replayed => s.handshake_replayed += 1,
            Rejection::Busy => s.handshake_busy += 1,
            Rejection::Unusable(_) => s.handshake_unusable += 1,
            Rejection::UnknownPeer(_) => s.handshake_auth_failures += 1,
        }
        if let Some(suppressed) = self.rejections.report(now.ms) {
            self.events.push_back(Event::HandshakeRejected {
                from,
                reason,
                suppressed,
            });
        }
    }

    fn on_init(&mut self, now: Now, from: SocketAddr, raw: &[u8], io: &mut dyn Io) {
        // Cheap checks first: each message 1 read costs a Diffie-Hellman.
        if !self.may_answer(&from) {
            self.stats.unanswerable_sources += 1;
            return;
        }
        if !self.sources.take(from.ip(), now.ms) {
            self.stats.handshake_rate_limited += 1;
            return;
        }
        let split = messages::split_cookie(raw);
        let cookie_ok = match &split {
            Some((_, c)) => self.cookies.check(&from, c, now.ms),
            None => false,
        };
        if cookie_ok {
            self.stats.cookies_valid += 1;
        }
        if self.cookies.count_and_check_load(now.ms) && !cookie_ok {
            // Under load: only a source that can receive its cookie gets read.
            if raw.len() >= 8 {
                let sender = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes"));
                let c = self.cookies.cookie(&from, now.ms);
                self.stats.cookies_sent += 1;
                send_raw(io, from, &messages::encode_cookie(sender, &c));
            }
            return;
        }
        // Before the Diffie-Hellman and the replay cache (a message 1 read
        // takes a slot there for a minute): a request that could not be held
        // would cost both for nothing.
        let server = self.server.as_ref().expect("checked by the caller");
        let waiting = server.pending_from(&from);
        if waiting.is_some_and(|(_, since)| now.ms < since + handshake::PENDING_STALE_MS) {
            // A retry while its request waits for the control plane: the
            // answer to that one still reaches the client.
            self.stats.handshake_failures += 1;
            self.stats.handshake_busy += 1;
            return;
        }
        if waiting.is_none() && server.is_full() {
            return self.reject(now, from, Rejection::Busy);
        }
        let owned;
        let dgram: &[u8] = match split {
            Some((m, _)) => {
                owned = m;
                &owned
            }
            None => raw,
        };
        let server = self.server.as_mut().expect("checked by the caller");
        match server.read_init(dgram, now.unix_ms) {
            Ok((request, accept)) => {
                // What the data path cannot run is refused here, before the
                // control plane allocates anything for it.
                let p = &request.payload;
                if let Err(e) = crate::params::check_peer_fec(p.fec) {
                    send_raw(io, from, &accept.refuse(&e.0));
                    return self.reject(now, from, Rejection::Unusable(e.0));
                }
                if p.cipher != self.params.cipher {
                    let why = format!(
                        "cipher mismatch: the server uses --crypt {}, the client {}; use the same --crypt on both sides",
                        self.params.cipher, p.cipher
                    );
                    send_raw(io, from, &accept.refuse(&why));
                    return self.reject(now, from, Rejection::Unusable(why));
                }
                match server.hold(accept, request.clone(), from, now.ms) {
                    Some(pending_id) => {
                        self.stats.handshake_requests += 1;
                        self.events.push_back(Event::HandshakeRequested(Request {
                            pending_id,
                            from,
                            sender_id: request.sender_id,
                            timestamp_ms: request.timestamp_ms,
                            client_key: request.client_key,
                            payload: request.payload,
                        }));
                    }
                    // The control plane is behind; the client will retry.
                    None => self.reject(now, from, Rejection::Busy),
                }
            }
            Err(e) => {
                let (reason, code) = match e {
                    HandshakeError::AuthFailed => {
                        (Rejection::AuthFailed, Some(RejectCode::AuthFailed))
                    }
                    HandshakeError::Stale { skew_ms } => {
                        (Rejection::Stale { skew_ms }, Some(RejectCode::Stale))
                    }
                    HandshakeError::Replayed => (Rejection::Replayed, Some(RejectCode::Replayed)),
                    HandshakeError::Busy => (Rejection::Busy, None),
                    HandshakeError::UnknownPeer { key, refusal } => {
                        // Authenticated: tell it why (no larger than its
                        // message 1, and the source passed the limits above).
                        send_raw(io, from, &refusal);
                        return self.reject(now, from, Rejection::UnknownPeer(key));
                    }
                    HandshakeError::PeerRefused { reason, refusal } => {
                        send_raw(io, from, &refusal);
                        return self.reject(now, from, Rejection::Unusable(reason));
                    }
                    // Garbage: counted, never answered nor reported.
                    _ => {
                        self.stats.malformed += 1;
                        return;
                    }
                };
                if let Some(code) = code {
                    self.send_hint(now, from, dgram, code, io);
                }
                self.reject(now, from, reason);
            }
        }
    }

    fn send_hint(
        &mut self,
        now: Now,
        to: SocketAddr,
        init: &[u8],
        code: RejectCode,
        io: &mut dyn Io,
    ) {
        if !self.may_answer(&to) {
            self.stats.unanswerable_sources += 1;
            return;
        }
        let Some(hint) = messages::encode_reject(init, code) else {
            return;
        };
        if self.hints.take(now.ms) {
            self.stats.hints_sent += 1;
            send_raw(io, to, &hint);
        } else {
            self.stats.hints_suppressed += 1;
        }
    }

    fn on_hint(&mut self, from: SocketAddr, dgram: &[u8]) {
        let c = self.connector.as_mut().expect("checked by the caller");
        // Unauthenticated: taken only from the server's address and only
        // for one of our attempts, and never the end of an attempt on its
        // own (see `HINTED_ATTEMPTS`): anyone who sees our message 1 could
        // send one.
        let Some((code, sender)) = messages::decode_reject(dgram) else {
            self.stats.malformed += 1;
            return;
        };
        if from != c.server || !c.owns(sender) {
            self.stats.malformed += 1;
            return;
        }
        let failure = match code {
            RejectCode::AuthFailed if self.identity.is_some() => ConnectFailure::ServerKeyMismatch,
            RejectCode::AuthFailed => ConnectFailure::AuthFailed,
            RejectCode::Stale => ConnectFailure::Stale,
            RejectCode::Replayed => ConnectFailure::Replayed,
        };
        self.stats.reject_hints_in += 1;
        if c.note_hint(sender, failure.clone()) {
            self.fail_connect(failure);
        }
    }

    /// Ends the connection attempt. A check of a live session that fails
    /// leaves that session alone (its idle timeout still applies).
    fn fail_connect(&mut self, failure: ConnectFailure) {
        let Some(c) = self.connector.take() else {
            return;
        };
        if c.replaces.is_some() {
            self.stats.rehandshake_failures += 1;
        } else {
            self.events.push_back(Event::ConnectFailed(failure));
        }
    }

    fn on_cookie(&mut self, now: Now, from: SocketAddr, dgram: &[u8], io: &mut dyn Io) {
        let c = self.connector.as_mut().expect("checked by the caller");
        match messages::decode_cookie(dgram) {
            Some((sender, cookie)) if from == c.server && c.owns(sender) => {
                c.set_cookie(cookie, now.ms);
                // Try again at once, with the cookie.
                self.send_attempt(now, io);
            }
            _ => self.stats.malformed += 1,
        }
    }

    /// The server says it has no session `id` (its id, which our datagrams
    /// carry): if that is the peer of our live session,
    /// check with a new handshake. The hint is unauthenticated, so it only
    /// starts a check: the old session ends when, and only when, the server
    /// accepts the new one.
    fn on_no_session(&mut self, now: Now, from: SocketAddr, dgram: &[u8], io: &mut dyn Io) {
        let Some(id) = messages::decode_no_session(dgram) else {
            self.stats.malformed += 1;
            return;
        };
        let ours = self
            .slots
            .iter()
            .flatten()
            .find(|s| s.session.peer_id() == id && s.addr == from)
            .map(|s| s.id);
        let Some(ours) = ours else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.no_session_hints_in += 1;
        if self.connector.is_some() || now.ms < self.rehandshake_not_before {
            return;
        }
        let Some(payload) = self.last_payload.clone() else {
            return;
        };
        self.rehandshake_not_before = now.ms + REHANDSHAKE_MIN_GAP_MS;
        self.stats.rehandshakes += 1;
        let mut c = Connector::new(from, payload, Some(REHANDSHAKE_ATTEMPTS));
        c.replaces = Some(ours);
        self.connector = Some(c);
        self.send_attempt(now, io);
    }

    fn on_response(&mut self, now: Now, from: SocketAddr, dgram: &[u8], io: &mut dyn Io) {
        let c = self.connector.as_mut().expect("checked by the caller");
        let (session_id, outcome) = match c.read(dgram) {
            Answer::Accepted {
                session_id,
                outcome,
            } => (session_id, outcome),
            Answer::Forged => {
                self.stats.forged_answers += 1;
                return;
            }
            Answer::Unrelated => {
                self.stats.malformed += 1;
                return;
            }
        };
        let replaces = c.replaces;
        let (config, keys, server_id) = match outcome {
            HandshakeOutcome::Refused { reason } => {
                return self.fail_connect(ConnectFailure::Refused(reason));
            }
            HandshakeOutcome::Accepted {
                config,
                keys,
                server_session_id,
            } => (config, keys, server_session_id),
        };
        self.connector = None;
        let terms = Terms {
            peer_fec: config.fec,
            udp_mtu: self.params.agree_udp_mtu(config.udp_mtu),
            keepalive_s: self.params.agree_keepalive(config.keepalive_s),
            vni_mtu: config.mtu,
            max_frame: config.full_frame_mtu.max(config.mtu),
            tap: config.tap,
        };
        let session = self
            .params
            .session_config(&terms)
            .map_err(|e| e.0)
            .and_then(|cfg| {
                Session::new(
                    cfg,
                    session_id,
                    &keys.send,
                    &keys.recv,
                    server_id,
                    now.ms32(),
                )
                .map_err(|e| e.to_string())
            });
        let mut session = match session {
            Ok(s) => s,
            Err(why) => {
                self.events
                    .push_back(Event::ConnectFailed(ConnectFailure::Refused(format!(
                        "the server's terms cannot be run here: {why}"
                    ))));
                return;
            }
        };
        // The interface comes later (`attach`); until then what arrives
        // waits in KCP. The first datagram tells the server we have the
        // session, so it starts sending only now (no loss counted for
        // datagrams that would have found no session here).
        session.hold_delivery();
        session.start_rekeying(now.ms32());
        session.greet(now.ms32(), &mut To { io, addr: from });
        let h = self.insert(now, session_id, session, from, false);
        self.events.push_back(Event::Connected {
            session_id,
            handle: h,
            server: from,
            config,
        });
        // The server accepted a new session: the one it said it had lost is gone.
        if let Some(old) = replaces.and_then(|id| self.handle_of(id)) {
            self.close(old, CloseReason::Replaced, io);
        }
    }

    // ------------------------------------------------------------ control plane

    /// Client: starts connecting to `server`: message 1 now, again every
    /// second until an answer (at most `max_attempts`, or forever). The
    /// payload's FEC, cipher, UDP MTU and keepalive come from this side's
    /// parameters.
    pub fn connect(
        &mut self,
        now: Now,
        server: SocketAddr,
        mut payload: InitPayload,
        max_attempts: Option<u32>,
        io: &mut dyn Io,
    ) {
        payload.fec = self.params.fec;
        payload.cipher = self.params.cipher;
        payload.udp_mtu = self.params.udp_mtu;
        payload.keepalive_s = self.params.keepalive_s;
        self.last_payload = Some(payload.clone());
        self.connector = Some(Connector::new(server, payload, max_attempts));
        self.send_attempt(now, io);
    }

    /// Client: stops connecting.
    pub fn cancel_connect(&mut self) {
        self.connector = None;
    }

    pub fn is_connecting(&self) -> bool {
        self.connector.is_some()
    }

    fn send_attempt(&mut self, now: Now, io: &mut dyn Io) {
        let Some(psk) = self.psk else { return };
        let session_id = self.new_session_id();
        let jitter = self.rng.next() % (RETRY_JITTER + 1);
        let c = self.connector.as_mut().expect("connecting");
        match c.attempt(
            &psk,
            self.identity.as_ref(),
            session_id,
            now.ms,
            now.unix_ms,
            jitter,
        ) {
            Ok(msg) => {
                self.stats.handshake_attempts += 1;
                let to = c.server;
                send_raw(io, to, &msg);
            }
            Err(e) => self.fail_connect(ConnectFailure::Invalid(e.to_string())),
        }
    }

    fn new_session_id(&mut self) -> u32 {
        loop {
            let id = self.rng.next() as u32;
            let in_use =
                self.by_id.contains_key(&id) || self.connector.as_ref().is_some_and(|c| c.owns(id));
            if id != 0 && !in_use {
                return id;
            }
        }
    }

    /// The interface of a session is ready (client: connected; server:
    /// confirmed): deliver what waited and read from it from now on.
    pub fn attach(&mut self, now: Now, h: Handle, io: &mut dyn Io) -> bool {
        let Some(slot) = self.slots.get_mut(h.0).and_then(|s| s.as_mut()) else {
            return false;
        };
        if slot.attached {
            return true;
        }
        slot.attached = true;
        let mut drops = 0;
        slot.session.release_delivery(&mut |pkt: &[u8]| {
            if !io.deliver(h, pkt) {
                drops += 1;
            }
        });
        self.stats.delivery_drops += drops;
        let id = slot.id;
        self.mark_dirty(h.0);
        self.events.push_back(Event::SessionUp {
            session_id: id,
            handle: h,
        });
        let _ = now;
        true
    }

    /// Server: accepts pending request `pending_id` with `offer` (the
    /// tunnel's addresses and MTUs as the control plane decided; FEC, UDP
    /// MTU and keepalive are filled in here) and answers. The session sends
    /// nothing before the client's first authenticated datagram, which
    /// raises `SessionConfirmed`; what arrives is held until `attach`. A
    /// session not confirmed within `CONFIRM_TIMEOUT_MS` closes (idle).
    pub fn accept(
        &mut self,
        now: Now,
        pending_id: u64,
        mut offer: ServerConfigPayload,
        io: &mut dyn Io,
    ) -> Result<(u32, Handle), AcceptError> {
        let server = self.server.as_mut().ok_or(AcceptError::NotServer)?;
        let pd = server.take(pending_id).ok_or(AcceptError::NotPending)?;
        let req = &pd.request.payload;
        offer.fec = self.params.fec;
        offer.udp_mtu = self.params.agree_udp_mtu(req.udp_mtu);
        offer.keepalive_s = self.params.agree_keepalive(req.keepalive_s);
        let terms = Terms {
            peer_fec: req.fec,
            udp_mtu: offer.udp_mtu,
            keepalive_s: offer.keepalive_s,
            vni_mtu: offer.mtu,
            max_frame: offer.full_frame_mtu.max(offer.mtu),
            tap: offer.tap,
        };
        let checked = offer
            .validate()
            .map_err(|e| e.to_string())
            .and_then(|_| self.params.session_config(&terms).map_err(|e| e.0));
        let cfg = match checked {
            Ok(cfg) => cfg,
            Err(why) => {
                let why = format!("the server cannot run this session: {why}");
                send_raw(io, pd.from, &pd.accept.refuse(&why));
                return Err(AcceptError::Unusable(ParamError(why)));
            }
        };
        let session_id = self.new_session_id();
        let client_id = pd.accept.sender_id();
        let (msg2, keys) = pd.accept.accept(&offer, session_id);
        let mut session = Session::new(
            cfg,
            client_id,
            &keys.send,
            &keys.recv,
            client_id,
            now.ms32(),
        )
        .map_err(|e| AcceptError::Unusable(ParamError(e.to_string())))?;
        session.await_peer(now.ms32(), CONFIRM_TIMEOUT_MS);
        session.hold_delivery();
        send_raw(io, pd.from, &msg2);
        let h = self.insert(now, session_id, session, pd.from, false);
        Ok((session_id, h))
    }

    /// Server: refuses pending request `pending_id` with a reason the
    /// client will show.
    pub fn refuse(&mut self, pending_id: u64, reason: &str, io: &mut dyn Io) -> bool {
        let Some(pd) = self.server.as_mut().and_then(|s| s.take(pending_id)) else {
            return false;
        };
        send_raw(io, pd.from, &pd.accept.refuse(reason));
        true
    }

    /// Ends a session: an authenticated goodbye, then it is gone.
    pub fn close(&mut self, h: Handle, reason: CloseReason, io: &mut dyn Io) -> bool {
        let Some(slot) = self.slots.get_mut(h.0).and_then(|s| s.as_mut()) else {
            return false;
        };
        let addr = slot.addr;
        slot.session.close(&mut To { io, addr });
        self.remove(h.0, reason);
        true
    }

    /// Ends every session (shutdown); each peer is told.
    pub fn close_all(&mut self, io: &mut dyn Io) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                self.close(Handle(i), CloseReason::Shutdown, io);
            }
        }
        self.connector = None;
    }

    fn insert(
        &mut self,
        now: Now,
        id: u32,
        session: Session,
        addr: SocketAddr,
        attached: bool,
    ) -> Handle {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[idx] = Some(Slot {
            id,
            session,
            addr,
            attached,
            deadline: u64::MAX,
            dirty: false,
            blocked: false,
        });
        self.by_id.insert(id, idx);
        self.stats.sessions_started += 1;
        self.stats.sessions = self.by_id.len() as u64;
        self.schedule(now, idx, now.ms);
        Handle(idx)
    }

    fn remove(&mut self, idx: usize, reason: CloseReason) {
        if let Some(slot) = self.slots[idx].take() {
            self.by_id.remove(&slot.id);
            self.free.push(idx);
            self.stats.sessions = self.by_id.len() as u64;
            self.events.push_back(Event::SessionClosed {
                session_id: slot.id,
                handle: Handle(idx),
                reason,
            });
        }
    }

    // ------------------------------------------------------------ interface side

    /// A packet read from session `h`'s interface. Returns whether the
    /// session takes more (false: stop reading until `poll_resumed`).
    pub fn send_packet(&mut self, now: Now, h: Handle, pkt: &mut [u8]) -> bool {
        let Some(slot) = self.slots.get_mut(h.0).and_then(|s| s.as_mut()) else {
            return false;
        };
        slot.session.send_packet(pkt, now.ms32());
        let wants = slot.session.wants_packets();
        if !wants {
            slot.blocked = true;
        }
        self.mark_dirty(h.0);
        wants
    }

    pub fn wants_packets(&self, h: Handle) -> bool {
        self.slots
            .get(h.0)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.attached && s.session.wants_packets())
    }

    /// The driver stops reading session `h`'s interface (it wants no more
    /// packets): `poll_resumed` names it once it does. Needed besides
    /// `send_packet`'s own note: a session can stop wanting packets without
    /// taking one (its scheduler handing packets to KCP counts each as a
    /// whole segment), and a pause nobody noted was never resumed.
    pub fn pause_reading(&mut self, h: Handle) {
        if let Some(slot) = self.slots.get_mut(h.0).and_then(|s| s.as_mut()) {
            slot.blocked = true;
        }
    }

    // ------------------------------------------------------------ time

    /// Sends what the sessions touched since the last call have ready
    /// (ACKs, data). Call after each batch of input.
    pub fn flush(&mut self, now: Now, io: &mut dyn Io) {
        while let Some(idx) = self.dirty.pop() {
            let Some(slot) = self.slots[idx].as_mut() else {
                continue;
            };
            slot.dirty = false;
            let addr = slot.addr;
            slot.session.flush(now.ms32(), &mut To { io, addr });
            self.after_activity(now, idx, now.ms);
        }
    }

    /// After a session sent or received: resumption, its next timer (not
    /// before `not_before`), its end.
    fn after_activity(&mut self, now: Now, idx: usize, not_before: u64) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        if slot.blocked && slot.attached && slot.session.wants_packets() {
            slot.blocked = false;
            self.resumed.push(Handle(idx));
        }
        if let Some((configured, works)) = slot.session.take_path_mtu_problem() {
            self.events.push_back(Event::PathMtu {
                session_id: slot.id,
                configured,
                works,
            });
        }
        if let Some(c) = slot.session.closed() {
            return self.remove(idx, c.into());
        }
        self.schedule(now, idx, not_before);
    }

    /// Puts the session's next timeout on the timer heap unless an earlier
    /// entry is already there (that one fires, polls and reschedules).
    fn schedule(&mut self, now: Now, idx: usize, not_before: u64) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        let n32 = now.ms32();
        let due = slot.session.next_timeout(n32);
        let at = (now.ms + (due.wrapping_sub(n32) as i32).max(0) as u64).max(not_before);
        if at < slot.deadline {
            slot.deadline = at;
            self.timers.push(Reverse((at, idx)));
        }
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.timers.peek().map(|Reverse((at, _))| *at);
        let mut earliest = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        earliest(self.connector.as_ref().map(|c| c.next_at()));
        earliest(self.server.as_ref().and_then(|s| s.next_expiry()));
        t
    }

    /// Runs what is due: session timers (retransmissions, keepalives,
    /// parity, liveness), handshake retries, expiry of pending requests.
    pub fn handle_timeout(&mut self, now: Now, io: &mut dyn Io) {
        while let Some(&Reverse((at, idx))) = self.timers.peek() {
            if at > now.ms {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots[idx].as_mut() else {
                continue;
            };
            if slot.deadline != at {
                continue; // superseded by an earlier entry that already ran
            }
            slot.deadline = u64::MAX;
            let addr = slot.addr;
            slot.session.poll(now.ms32(), &mut To { io, addr });
            // A session polled now runs again 1 ms later at the earliest,
            // whatever its timers say, so one can never spin the loop.
            self.after_activity(now, idx, now.ms + 1);
        }
        if let Some(server) = self.server.as_mut() {
            server.expire(now.ms);
        }
        let retry = self
            .connector
            .as_ref()
            .map(|c| (c.next_at(), c.may_retry()));
        match retry {
            Some((at, _)) if at > now.ms => {}
            Some((_, true)) => self.send_attempt(now, io),
            Some((_, false)) => {
                // Out of attempts: the last hint's reason, if one came, says
                // more than "no answer".
                let c = self.connector.as_mut().expect("connecting");
                let attempts = c.attempts_sent();
                let failure = c
                    .hint
                    .take()
                    .unwrap_or(ConnectFailure::NoAnswer { attempts });
                self.fail_connect(failure);
            }
            None => {}
        }
    }
}

/// Why `accept` did not start a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("this endpoint is not a server")]
    NotServer,
    #[error("the handshake is no longer pending (answered already, or expired after 10 s)")]
    NotPending,
    /// Refused to the client with this reason.
    #[error("{0}")]
    Unusable(ParamError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_sources_with_a_port_are_answered() {
        for ok in ["10.0.0.1:5", "[2001:db8::1]:5", "[::ffff:10.0.0.1]:5"] {
            assert!(answerable(&ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "10.0.0.1:0",
            "255.255.255.255:5",
            "224.0.0.1:5",
            "0.0.0.0:5",
            "[ff02::1]:5",
            "[::]:5",
            "[::ffff:255.255.255.255]:5",
        ] {
            assert!(!answerable(&bad.parse().unwrap()), "{bad}");
        }
    }
}
