//! The session handshake, sans-IO: datagrams in, datagrams and outcomes out.
//!
//! Two messages of Noise (prologue `"kcpvpn v2"`), the PSK being the
//! Argon2id-stretched shared secret (salted with the network name):
//!
//! - simple mode: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, the shared secret
//!   alone authenticates both sides;
//! - identity mode: `Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s`, each side also
//!   holds a static X25519 key: the client pins the server's public key,
//!   the server lists the clients' public keys ([`identity`]). Why IKpsk1:
//!   docs/protocol.md, section 2.7.
//!
//! ```text
//! client                                        server
//! Initiator::new ── message 1 (type 1) ──────▶ Responder::read_init
//!   [psk, e] + InitPayload (timestamp, wishes)    (verifies, keeps nothing
//!                                                  but a replay-cache entry)
//!                                                PendingAccept::accept / refuse
//! Initiator::read_response ◀── message 2 (type 2) ──
//!   [e, ee] + ResponsePayload (config or reason)
//! ```
//!
//! Both sides then hold the same two 32-byte keys, one per direction, for
//! [`crate::packet`]. The server holds no state for a message 1 it cannot
//! authenticate, and message 1 is padded to be at least as large as any
//! message 2, so the server never amplifies traffic.

pub mod identity;
pub mod payload;

pub use identity::{
    generate_private_key, key_client_id, public_key, to_base64, ClientIdentity, Peer,
    ServerIdentity, KEY_LEN,
};

pub use payload::{
    InitPayload, ResponsePayload, ServerConfigPayload, IP_MODE_CLIENT_SET, IP_MODE_NONE,
    IP_MODE_SERVER_ASSIGNS, KEEPALIVE_RANGE_S, MAX_CLIENT_ID, MAX_REASON, MIN_UDP_MTU,
};

use payload::{
    decode_init, decode_response, encode_init, encode_response, MAX_INIT_PAYLOAD,
    MAX_RESPONSE_PAYLOAD,
};
use snow::params::NoiseParams;
use snow::HandshakeState;
use std::collections::HashMap;

/// Outer type of handshake message 1 (client → server).
pub const MSG_INIT: u8 = crate::packet::MSG_HANDSHAKE_INIT;
/// Outer type of handshake message 2 (server → client).
pub const MSG_RESPONSE: u8 = crate::packet::MSG_HANDSHAKE_RESPONSE;

pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Identity mode (static keys on both sides, the PSK mixed in at the end
/// of message 1).
pub const NOISE_PATTERN_IDENTITY: &str = "Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s";
/// Version 2: the per-network salt and identity mode. A v1 peer fails to
/// authenticate rather than half-work.
pub const PROLOGUE: &[u8] = b"kcpvpn v2";
/// The Argon2id salt of [`stretch_secret_for`] is this followed by the
/// network name: both sides know the name, and each deployment that names
/// its network gets a dictionary of its own.
pub const PSK_SALT_PREFIX: &str = "kcpvpn/psk/v2/";
/// The network name when none is configured.
pub const DEFAULT_NETWORK: &str = "kcpvpn";
/// Longest network name, in bytes.
pub const MAX_NETWORK_LEN: usize = 64;
/// Argon2id cost: memory in KiB, passes, lanes.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
pub const ARGON2_T: u32 = 3;
pub const ARGON2_P: u32 = 1;

const DH_LEN: usize = 32;
const AEAD_TAG: usize = 16;
/// Message 1: type, 3 reserved, sender id.
pub const INIT_HEADER_LEN: usize = 8;
/// Message 2: type, 3 reserved, sender id, receiver id.
pub const RESPONSE_HEADER_LEN: usize = 12;
/// Largest message 2.
pub const MAX_RESPONSE_LEN: usize = RESPONSE_HEADER_LEN + DH_LEN + MAX_RESPONSE_PAYLOAD + AEAD_TAG;
/// Size of the message 1 we send (and the least we accept): at least the
/// largest message 2, so answering never amplifies.
pub const INIT_LEN: usize =
    at_least_response(INIT_HEADER_LEN + DH_LEN + MAX_INIT_PAYLOAD + AEAD_TAG);
/// The same in identity mode, whose message 1 also carries the client's
/// static key (encrypted: 32 bytes and a tag).
pub const INIT_LEN_IDENTITY: usize =
    at_least_response(INIT_HEADER_LEN + DH_LEN + DH_LEN + AEAD_TAG + MAX_INIT_PAYLOAD + AEAD_TAG);

const fn at_least_response(natural: usize) -> usize {
    if natural > MAX_RESPONSE_LEN {
        natural
    } else {
        MAX_RESPONSE_LEN
    }
}
/// Largest message 1 we accept (room for future, longer payloads).
pub const MAX_INIT_LEN: usize = 1200;
/// Default freshness window for message 1 timestamps.
pub const DEFAULT_MAX_AGE_MS: u64 = 60_000;
/// Default bound of the message-1 replay cache.
pub const DEFAULT_REPLAY_CAPACITY: usize = 16_384;

/// Why a handshake message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake message is truncated")]
    Truncated,
    #[error("handshake message is larger than any valid one")]
    Oversized,
    #[error("not a handshake message of the expected type (or non-zero reserved bytes)")]
    BadType,
    /// Server side: message 1 did not authenticate.
    #[error("handshake authentication failed: the client does not share our secret, or the message was forged or corrupted")]
    AuthFailed,
    /// Client side: message 2 did not authenticate.
    #[error(
        "authentication failed: the server does not share our secret (check that both sides use the same secret), \
         or the answer was forged"
    )]
    ResponseAuthFailed,
    /// Authenticated, but the payload does not decode.
    #[error("malformed handshake payload: {0}")]
    Malformed(&'static str),
    /// Message 1's timestamp is outside the freshness window.
    #[error(
        "stale handshake: the client's clock is {skew_ms} ms away from ours (more than allowed); \
         check both clocks (NTP)"
    )]
    Stale { skew_ms: i64 },
    /// Message 1 was already seen (a replay inside the freshness window),
    /// or its timestamp is not later than the last one of the same client.
    #[error("replayed handshake message 1")]
    Replayed,
    /// Identity mode: message 1 authenticated, but its key is not one of
    /// the server's peers. `refusal` is an authenticated message 2 saying
    /// so, for the caller to send (nothing else is kept).
    #[error("the client key {} is not one of the server's peers", to_base64(.key))]
    UnknownPeer {
        key: [u8; KEY_LEN],
        refusal: Vec<u8>,
    },
    /// Identity mode: a peer asked for the fixed address of another peer.
    /// `refusal` is the authenticated message 2 saying so.
    #[error("{reason}")]
    PeerRefused { reason: String, refusal: Vec<u8> },
    /// The replay cache is full of live entries.
    #[error("too many handshakes in progress; the client should retry shortly")]
    Busy,
    /// Our own parameters cannot be sent (a local configuration mistake).
    #[error("invalid handshake parameters: {0}")]
    InvalidPayload(String),
    #[error("this handshake already completed")]
    AlreadyComplete,
    #[error("noise protocol error: {0}")]
    Noise(String),
}

/// Derives the 32-byte Noise PSK from the human secret with Argon2id
/// (m = 64 MiB, t = 3, p = 1) for the default network name.
pub fn stretch_secret(secret: &[u8]) -> [u8; 32] {
    stretch_secret_for(secret, DEFAULT_NETWORK).expect("the default network name is valid")
}

/// Why `network` cannot name a network, or None: 1..=64 bytes of UTF-8
/// without control characters (it is typed on both sides).
pub fn network_problem(network: &str) -> Option<String> {
    if network.is_empty() || network.len() > MAX_NETWORK_LEN {
        return Some(format!(
            "the network name must be 1 to {MAX_NETWORK_LEN} bytes long, not {}",
            network.len()
        ));
    }
    if network.chars().any(char::is_control) {
        return Some("the network name may not hold control characters".into());
    }
    None
}

/// Derives the PSK with Argon2id (m = 64 MiB, t = 3, p = 1, salt
/// `kcpvpn/psk/v2/` + `network`). Deliberately slow and memory-hard so a
/// guesser pays that per guess, and salted per network so one precomputed
/// dictionary does not serve every deployment; call it once at start-up.
pub fn stretch_secret_for(secret: &[u8], network: &str) -> Result<[u8; 32], HandshakeError> {
    if let Some(why) = network_problem(network) {
        return Err(HandshakeError::InvalidPayload(why));
    }
    let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
        .expect("fixed Argon2 parameters are valid");
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    let salt = format!("{PSK_SALT_PREFIX}{network}");
    // Only fails for secrets longer than 4 GiB or a salt under 8 bytes.
    a.hash_password_into(secret, salt.as_bytes(), &mut out)
        .expect("secret length within Argon2 limits");
    Ok(out)
}

/// The two packet keys of a session, as seen from one side (wiped when
/// dropped).
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

fn params(identity: bool) -> NoiseParams {
    if identity {
        NOISE_PATTERN_IDENTITY
    } else {
        NOISE_PATTERN
    }
    .parse()
    .expect("the Noise pattern name is valid")
}

fn noise_err(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// Static keys: (our private key, the peer's public key if known ahead).
type Statics<'a> = Option<(&'a [u8; KEY_LEN], Option<&'a [u8; KEY_LEN]>)>;

fn build(
    psk: &[u8; 32],
    initiator: bool,
    statics: Statics,
) -> Result<HandshakeState, HandshakeError> {
    let mut b = snow::Builder::new(params(statics.is_some()))
        .prologue(PROLOGUE)
        .map_err(noise_err)?
        // The PSK's position: 0 in NNpsk0, 1 in IKpsk1.
        .psk(statics.is_some() as u8, psk)
        .map_err(noise_err)?;
    if let Some((private, remote)) = statics {
        b = b.local_private_key(private).map_err(noise_err)?;
        if let Some(r) = remote {
            b = b.remote_public_key(r).map_err(noise_err)?;
        }
    }
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(noise_err)
}

/// Client-side key split: (client→server, server→client).
fn split(hs: &mut HandshakeState) -> ([u8; 32], [u8; 32]) {
    hs.dangerously_get_raw_split()
}

// ---------------------------------------------------------------- client

/// What the client learns from message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeOutcome {
    Accepted {
        config: ServerConfigPayload,
        keys: SessionKeys,
        server_session_id: u32,
    },
    Refused {
        reason: String,
    },
}

/// Client side of one handshake attempt.
pub struct Initiator {
    hs: HandshakeState,
    session_id: u32,
    done: bool,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("session_id", &self.session_id)
            .field("done", &self.done)
            .finish()
    }
}

impl Initiator {
    /// Starts a handshake. `session_id` is the id the client will receive
    /// data under; `now_unix_ms` goes into message 1 for freshness. Returns
    /// the state and message 1 (send it, and again on retry timeout: a new
    /// `Initiator` per attempt is also fine).
    pub fn new(
        psk: &[u8; 32],
        payload: InitPayload,
        session_id: u32,
        now_unix_ms: u64,
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        Initiator::start(psk, None, payload, session_id, now_unix_ms)
    }

    /// As `new`, in identity mode when `identity` is given.
    pub fn start(
        psk: &[u8; 32],
        identity: Option<&ClientIdentity>,
        payload: InitPayload,
        session_id: u32,
        now_unix_ms: u64,
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        let (len, overhead) = match identity {
            None => (INIT_LEN, DH_LEN + AEAD_TAG),
            Some(_) => (INIT_LEN_IDENTITY, DH_LEN + DH_LEN + AEAD_TAG + AEAD_TAG),
        };
        let mut plain = Vec::with_capacity(len);
        encode_init(&payload, now_unix_ms, &mut plain)?;
        // Pad inside the encryption: authenticated, and the Noise message then
        // simply runs to the end of the datagram.
        plain.resize(len - INIT_HEADER_LEN - overhead, 0);
        let statics = identity.map(|i| (&i.private_key, Some(&i.server_public_key)));
        let mut hs = build(psk, true, statics)?;
        let mut msg = vec![0u8; len];
        msg[0] = MSG_INIT;
        msg[4..8].copy_from_slice(&session_id.to_le_bytes());
        let n = hs
            .write_message(&plain, &mut msg[INIT_HEADER_LEN..])
            .map_err(noise_err)?;
        debug_assert_eq!(INIT_HEADER_LEN + n, len);
        msg.truncate(INIT_HEADER_LEN + n);
        Ok((
            Initiator {
                hs,
                session_id,
                done: false,
            },
            msg,
        ))
    }

    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Reads a datagram that may be message 2. `Ok(None)`: not a response
    /// to this attempt (other type or receiver id), ignore it. `Err`: it
    /// claimed to be, but is truncated, forged or from a server with another
    /// secret; the attempt stays usable, so a forged answer cannot kill a
    /// handshake whose genuine answer is still on its way.
    pub fn read_response(
        &mut self,
        datagram: &[u8],
    ) -> Result<Option<HandshakeOutcome>, HandshakeError> {
        if self.done {
            return Err(HandshakeError::AlreadyComplete);
        }
        match datagram.first() {
            Some(&MSG_RESPONSE) => {}
            _ => return Ok(None),
        }
        if datagram.len() < RESPONSE_HEADER_LEN {
            return Err(HandshakeError::Truncated);
        }
        if datagram[1..4] != [0, 0, 0] {
            return Err(HandshakeError::BadType);
        }
        let server_id = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let receiver = u32::from_le_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
        if receiver != self.session_id {
            return Ok(None);
        }
        if datagram.len() < RESPONSE_HEADER_LEN + DH_LEN + AEAD_TAG {
            return Err(HandshakeError::Truncated);
        }
        if datagram.len() > MAX_RESPONSE_LEN {
            return Err(HandshakeError::Oversized);
        }
        let mut plain = [0u8; MAX_RESPONSE_LEN];
        // snow restores its state when a read fails, so a failure here leaves
        // the attempt ready for the genuine answer.
        let n = self
            .hs
            .read_message(&datagram[RESPONSE_HEADER_LEN..], &mut plain)
            .map_err(|_| HandshakeError::ResponseAuthFailed)?;
        let payload = decode_response(&plain[..n])?;
        self.done = true;
        Ok(Some(match payload {
            ResponsePayload::Refused(reason) => HandshakeOutcome::Refused { reason },
            ResponsePayload::Accepted(config) => {
                let (c2s, s2c) = split(&mut self.hs);
                HandshakeOutcome::Accepted {
                    config,
                    keys: SessionKeys {
                        send: c2s,
                        recv: s2c,
                    },
                    server_session_id: server_id,
                }
            }
        }))
    }
}

// ---------------------------------------------------------------- server

/// An authenticated message 1, for the control plane to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRequest {
    /// The client's receive session id (put in every datagram we send it).
    pub sender_id: u32,
    /// The client's clock when it sent message 1 (unix ms).
    pub timestamp_ms: u64,
    /// Identity mode: the client's static public key (one of the server's
    /// peers; `payload` already carries that peer's id and address).
    pub client_key: Option<[u8; KEY_LEN]>,
    pub payload: InitPayload,
}

/// A verified message 1 awaiting the control plane's decision. Consumed by
/// `accept` or `refuse`; dropping it forgets the attempt.
pub struct PendingAccept {
    hs: HandshakeState,
    client_session_id: u32,
}

impl std::fmt::Debug for PendingAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAccept")
            .field("client_session_id", &self.client_session_id)
            .finish()
    }
}

impl PendingAccept {
    /// The client's receive session id.
    pub fn sender_id(&self) -> u32 {
        self.client_session_id
    }

    fn respond(mut self, p: &ResponsePayload, server_session_id: u32) -> (Vec<u8>, HandshakeState) {
        let mut plain = Vec::with_capacity(MAX_RESPONSE_PAYLOAD);
        encode_response(p, &mut plain);
        let mut msg = vec![0u8; MAX_RESPONSE_LEN];
        msg[0] = MSG_RESPONSE;
        msg[4..8].copy_from_slice(&server_session_id.to_le_bytes());
        msg[8..12].copy_from_slice(&self.client_session_id.to_le_bytes());
        // Cannot fail: the state is at message 2 and the buffer fits the
        // largest payload by construction.
        let n = self
            .hs
            .write_message(&plain, &mut msg[RESPONSE_HEADER_LEN..])
            .expect("message 2 fits its buffer and the state expects it");
        msg.truncate(RESPONSE_HEADER_LEN + n);
        (msg, self.hs)
    }

    /// Accepts: returns message 2 (send it to the client) and the server's
    /// session keys. `server_session_id` is the id the server receives under.
    pub fn accept(
        self,
        config: &ServerConfigPayload,
        server_session_id: u32,
    ) -> (Vec<u8>, SessionKeys) {
        let (msg, mut hs) = self.respond(
            &ResponsePayload::Accepted(config.clone()),
            server_session_id,
        );
        let (c2s, s2c) = split(&mut hs);
        (
            msg,
            SessionKeys {
                send: s2c,
                recv: c2s,
            },
        )
    }

    /// Refuses with a reason the client will print (clipped to 200 bytes).
    /// Still an authenticated message 2, so it cannot be forged by a third
    /// party and the client can trust the reason.
    pub fn refuse(self, reason: &str) -> Vec<u8> {
        self.respond(&ResponsePayload::Refused(reason.to_owned()), 0)
            .0
    }
}

/// Server counters for message 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Authenticated, fresh, new: handed to the control plane.
    pub requests: u64,
    pub auth_failures: u64,
    /// Truncated, oversized, wrong type or undecodable payload.
    pub malformed: u64,
    pub stale: u64,
    pub replayed: u64,
    pub busy: u64,
    /// Identity mode: authenticated keys that are not among the peers.
    pub unknown_peers: u64,
    /// Identity mode: peers refused for asking another's fixed address.
    pub peer_refusals: u64,
}

/// Whose message-1 timestamps must increase: the key in identity mode, the
/// (non-empty) client id in simple mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ident {
    Key([u8; KEY_LEN]),
    Id(String),
}

/// Server side: verifies message 1 statelessly, remembering only recently
/// seen ephemeral keys to refuse replays.
pub struct Responder {
    psk: [u8; 32],
    max_age_ms: u64,
    /// Ephemeral key of each accepted message 1 → unix ms after which its
    /// timestamp is stale anyway (so the entry can go).
    seen: HashMap<[u8; DH_LEN], u64>,
    /// The latest message-1 timestamp of each client identity: a later
    /// message 1 must carry a larger one. An entry older than the freshness
    /// window can go (anything at or below it would be stale anyway).
    last_ts: HashMap<Ident, u64>,
    capacity: usize,
    identity: Option<ServerIdentity>,
    stats: ResponderStats,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("max_age_ms", &self.max_age_ms)
            .field("seen", &self.seen.len())
            .field("identity", &self.identity)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.psk);
    }
}

impl Responder {
    /// `max_age_ms`: how far message 1's timestamp may be from our clock,
    /// either way (default [`DEFAULT_MAX_AGE_MS`]).
    pub fn new(psk: &[u8; 32], max_age_ms: u64) -> Responder {
        Responder::with_capacity(psk, max_age_ms, DEFAULT_REPLAY_CAPACITY)
    }

    /// As `new`, with a bound on the replay cache (entries live at most
    /// 2 × max_age).
    pub fn with_capacity(psk: &[u8; 32], max_age_ms: u64, capacity: usize) -> Responder {
        Responder {
            psk: *psk,
            max_age_ms,
            seen: HashMap::new(),
            last_ts: HashMap::new(),
            capacity: capacity.max(1),
            identity: None,
            stats: ResponderStats::default(),
        }
    }

    /// Identity mode: only `identity`'s peers get in, each as itself.
    pub fn with_identity(mut self, identity: ServerIdentity) -> Responder {
        self.identity = Some(identity);
        self
    }

    pub fn identity(&self) -> Option<&ServerIdentity> {
        self.identity.as_ref()
    }

    /// A new list of peers (SIGHUP): keys no longer listed get no further
    /// handshake, and their timestamp entries go.
    pub fn set_identity(&mut self, identity: ServerIdentity) {
        self.last_ts.retain(|i, _| match i {
            Ident::Key(k) => identity.peer(k).is_some(),
            Ident::Id(_) => true,
        });
        self.identity = Some(identity);
    }

    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    /// Verifies message 1. On success the request is authenticated (the
    /// client holds the secret), fresh and new. Every error is counted and
    /// leaves no state behind.
    pub fn read_init(
        &mut self,
        datagram: &[u8],
        now_unix_ms: u64,
    ) -> Result<(InitRequest, PendingAccept), HandshakeError> {
        let r = self.read_init_inner(datagram, now_unix_ms);
        let s = &mut self.stats;
        match &r {
            Ok(_) => s.requests += 1,
            Err(HandshakeError::AuthFailed) => s.auth_failures += 1,
            Err(HandshakeError::Stale { .. }) => s.stale += 1,
            Err(HandshakeError::Replayed) => s.replayed += 1,
            Err(HandshakeError::Busy) => s.busy += 1,
            Err(HandshakeError::UnknownPeer { .. }) => s.unknown_peers += 1,
            Err(HandshakeError::PeerRefused { .. }) => s.peer_refusals += 1,
            Err(_) => s.malformed += 1,
        }
        r
    }

    fn read_init_inner(
        &mut self,
        d: &[u8],
        now: u64,
    ) -> Result<(InitRequest, PendingAccept), HandshakeError> {
        let min_len = match self.identity {
            None => INIT_LEN,
            Some(_) => INIT_LEN_IDENTITY,
        };
        if d.len() < min_len {
            return Err(HandshakeError::Truncated);
        }
        if d.len() > MAX_INIT_LEN {
            return Err(HandshakeError::Oversized);
        }
        if d[0] != MSG_INIT || d[1..4] != [0, 0, 0] {
            return Err(HandshakeError::BadType);
        }
        let sender_id = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        let statics = self.identity.as_ref().map(|i| (&i.private_key, None));
        let mut hs = build(&self.psk, false, statics)?;
        let mut plain = [0u8; MAX_INIT_LEN];
        let n = hs
            .read_message(&d[INIT_HEADER_LEN..], &mut plain)
            .map_err(|_| HandshakeError::AuthFailed)?;
        let client_key: Option<[u8; KEY_LEN]> = match self.identity {
            None => None,
            Some(_) => Some(
                hs.get_remote_static()
                    .and_then(|k| k.try_into().ok())
                    .ok_or(HandshakeError::Noise(
                        "no static key after message 1".into(),
                    ))?,
            ),
        };
        let (ts, mut payload) = decode_init(&plain[..n])?;
        let skew = (now as i128 - ts as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        if skew.unsigned_abs() > self.max_age_ms {
            return Err(HandshakeError::Stale { skew_ms: skew });
        }
        if let (Some(id), Some(key)) = (&self.identity, client_key) {
            let Some(peer) = id.peer(&key) else {
                // Authenticated (it holds this key, the secret and our public
                // key), so it may learn why; nothing is kept.
                let why = format!(
                    "the server does not know this client's key {}: its operator must add it to the server's peers",
                    to_base64(&key)
                );
                let refusal = PendingAccept {
                    hs,
                    client_session_id: sender_id,
                }
                .refuse(&why);
                return Err(HandshakeError::UnknownPeer { key, refusal });
            };
            // The peer entry, not the client's wish, names it.
            payload.client_id = peer.client_id.clone();
            if let (Some(ip), true) = (peer.ip, payload.ip_mode != IP_MODE_NONE) {
                payload.ip_mode = IP_MODE_CLIENT_SET;
                payload.ip = Some(ip);
            }
            if let Some(owner) = payload.ip.and_then(|ip| id.fixed_owner(ip)) {
                if owner.public_key != key {
                    let reason = format!(
                        "{} is the fixed address of peer {}; ask for another one",
                        payload.ip.expect("checked"),
                        owner.client_id
                    );
                    let refusal = PendingAccept {
                        hs,
                        client_session_id: sender_id,
                    }
                    .refuse(&reason);
                    return Err(HandshakeError::PeerRefused {
                        reason: format!("peer {}: {reason}", payload.client_id),
                        refusal,
                    });
                }
            }
        }
        let ident = match client_key {
            Some(k) => Some(Ident::Key(k)),
            None if !payload.client_id.is_empty() => Some(Ident::Id(payload.client_id.clone())),
            None => None,
        };
        if let Some(last) = ident.as_ref().and_then(|i| self.last_ts.get(i)) {
            if ts <= *last {
                return Err(HandshakeError::Replayed);
            }
        }
        // The Noise ephemeral key is fresh per attempt, so it identifies this
        // message 1. Only authenticated messages get here, so the cache
        // cannot be filled by someone without the secret.
        let mut e = [0u8; DH_LEN];
        e.copy_from_slice(&d[INIT_HEADER_LEN..INIT_HEADER_LEN + DH_LEN]);
        if self.seen.contains_key(&e) {
            return Err(HandshakeError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, &mut expiry| expiry >= now);
            if self.seen.len() >= self.capacity {
                return Err(HandshakeError::Busy);
            }
        }
        if let Some(i) = &ident {
            if !self.last_ts.contains_key(i) && self.last_ts.len() >= self.capacity {
                let max_age = self.max_age_ms;
                self.last_ts
                    .retain(|_, &mut last| last.saturating_add(max_age) >= now);
                if self.last_ts.len() >= self.capacity {
                    return Err(HandshakeError::Busy);
                }
            }
        }
        self.seen.insert(e, ts.saturating_add(self.max_age_ms));
        if let Some(i) = ident {
            self.last_ts.insert(i, ts);
        }
        Ok((
            InitRequest {
                sender_id,
                timestamp_ms: ts,
                client_key,
                payload,
            },
            PendingAccept {
                hs,
                client_session_id: sender_id,
            },
        ))
    }
}

#[cfg(test)]
mod tests;
