//! Both sides of the handshake as the endpoint runs them: the server's
//! responder and its table of authenticated requests awaiting the control
//! plane, and the client's connector (attempts, retries, answers, hints).
//! The cryptography is in [`kcpvpn_crypto::handshake`].
use super::messages::{attach_cookie, COOKIE_LEN};
use kcpvpn_crypto::handshake::{
    ClientIdentity, HandshakeError, HandshakeOutcome, InitPayload, InitRequest, Initiator,
    PendingAccept, Responder,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

/// Handshakes authenticated but not yet answered by the control plane.
pub const MAX_PENDING: usize = 256;
/// An unanswered request is forgotten after this long (ms); the client
/// retries with a fresh message 1 anyway.
pub const PENDING_TTL_MS: u64 = 10_000;
/// The client sends a fresh message 1 this often while no answer comes (ms).
pub const RETRY_MS: u64 = 1000;
/// Answers to this many recent attempts are still taken: on a path with a
/// round trip above `RETRY_MS` the answer to an earlier attempt arrives
/// after the next one left.
pub const LIVE_ATTEMPTS: usize = 4;
/// A pending request older than this is answered too late for its client
/// (it takes answers to its last `LIVE_ATTEMPTS` attempts, one per
/// `RETRY_MS`): a newer request from the same source replaces it.
pub const PENDING_STALE_MS: u64 = RETRY_MS * (LIVE_ATTEMPTS as u64 - 1);
/// An attempt that retries forever (auto-reconnect) ends, so that the
/// control plane backs off, once this many of its messages 1 drew a reject
/// hint and none an answer. A bounded one ends only when its attempts run
/// out. Hints are unauthenticated: they never end an attempt sooner.
pub const HINTED_ATTEMPTS: u32 = 3;

/// An authenticated request waiting for the control plane.
pub struct Pending {
    pub accept: PendingAccept,
    pub request: InitRequest,
    pub from: SocketAddr,
    pub since_ms: u64,
}

/// The server side: verifies message 1 statelessly and holds what passed
/// until the control plane decides.
pub struct ServerSide {
    pub responder: Responder,
    /// By pending id; ids grow with time, so the first entry is the oldest.
    pending: BTreeMap<u64, Pending>,
    /// The pending request of each source (at most one: a client's retries
    /// while its request waits would each become a session it never uses).
    by_source: HashMap<SocketAddr, u64>,
    next_id: u64,
}

impl ServerSide {
    pub fn new(responder: Responder) -> ServerSide {
        ServerSide {
            responder,
            pending: BTreeMap::new(),
            by_source: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn read_init(
        &mut self,
        dgram: &[u8],
        unix_ms: u64,
    ) -> Result<(InitRequest, PendingAccept), HandshakeError> {
        self.responder.read_init(dgram, unix_ms)
    }

    /// Holds an authenticated request; None when too many are waiting. It
    /// takes the place of a request still waiting from the same source.
    pub fn hold(
        &mut self,
        accept: PendingAccept,
        request: InitRequest,
        from: SocketAddr,
        now_ms: u64,
    ) -> Option<u64> {
        if !self.by_source.contains_key(&from) && self.pending.len() >= MAX_PENDING {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        if let Some(old) = self.by_source.insert(from, id) {
            self.pending.remove(&old);
        }
        self.pending.insert(
            id,
            Pending {
                accept,
                request,
                from,
                since_ms: now_ms,
            },
        );
        Some(id)
    }

    pub fn take(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.by_source.remove(&p.from);
        Some(p)
    }

    /// (id, since) of the request waiting from `from`, if any.
    pub fn pending_from(&self, from: &SocketAddr) -> Option<(u64, u64)> {
        let id = *self.by_source.get(from)?;
        self.pending.get(&id).map(|p| (id, p.since_ms))
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Forgets requests older than the TTL; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some(e) = self.pending.first_entry() {
            if e.get().since_ms + PENDING_TTL_MS > now_ms {
                break;
            }
            let p = e.remove();
            self.by_source.remove(&p.from);
            n += 1;
        }
        n
    }

    /// When the oldest request expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.pending
            .first_key_value()
            .map(|(_, p)| p.since_ms + PENDING_TTL_MS)
    }
}

/// What a connection attempt came to.
pub enum Answer {
    Accepted {
        session_id: u32,
        outcome: HandshakeOutcome,
    },
    /// Claimed to answer us but failed authentication: forged, or garbled.
    Forged,
    /// Not for any attempt of ours.
    Unrelated,
}

/// The client side: one attempt after another to the server until one is
/// answered, each a fresh message 1 (the server refuses replays).
pub struct Connector {
    pub server: SocketAddr,
    pub payload: InitPayload,
    attempts: VecDeque<Initiator>,
    sent: u32,
    max_attempts: Option<u32>,
    next_at: u64,
    /// The live session this attempt would replace (the server said it has
    /// no such session; only an accepted answer proves it).
    pub replaces: Option<u32>,
    /// The server's cookie for our address, and until when we use it.
    cookie: Option<([u8; COOKIE_LEN], u64)>,
    /// Attempts a reject hint named, and the last hint's reason (what the
    /// attempt reports if it ends without an answer).
    hinted: Vec<u32>,
    pub hint: Option<super::ConnectFailure>,
}

impl Connector {
    pub fn new(server: SocketAddr, payload: InitPayload, max_attempts: Option<u32>) -> Connector {
        Connector {
            server,
            payload,
            attempts: VecDeque::new(),
            sent: 0,
            max_attempts,
            next_at: 0,
            replaces: None,
            cookie: None,
            hinted: Vec::new(),
            hint: None,
        }
    }

    /// Keeps the server's cookie for the next attempts (it is good for at
    /// least two minutes; we use it for one).
    pub fn set_cookie(&mut self, cookie: [u8; COOKIE_LEN], now_ms: u64) {
        self.cookie = Some((cookie, now_ms + 60_000));
    }

    pub fn attempts_sent(&self) -> u32 {
        self.sent
    }

    pub fn next_at(&self) -> u64 {
        self.next_at
    }

    /// Whether another attempt may go (false: give up).
    pub fn may_retry(&self) -> bool {
        self.max_attempts.is_none_or(|m| self.sent < m)
    }

    pub fn owns(&self, session_id: u32) -> bool {
        self.attempts.iter().any(|a| a.session_id() == session_id)
    }

    /// A hint about attempt `session_id` (one of ours, from the server's
    /// address). Returns whether the attempt should end now: it retries
    /// forever and `HINTED_ATTEMPTS` attempts were hinted.
    pub fn note_hint(&mut self, session_id: u32, why: super::ConnectFailure) -> bool {
        if !self.hinted.contains(&session_id) {
            self.hinted.push(session_id);
        }
        self.hint = Some(why);
        self.max_attempts.is_none() && self.hinted.len() as u32 >= HINTED_ATTEMPTS
    }

    /// A new attempt: message 1 to send. `jitter_ms` spreads retries of
    /// many clients restarted together.
    pub fn attempt(
        &mut self,
        psk: &[u8; 32],
        identity: Option<&ClientIdentity>,
        session_id: u32,
        now_ms: u64,
        unix_ms: u64,
        jitter_ms: u64,
    ) -> Result<Vec<u8>, HandshakeError> {
        let (ini, msg) =
            Initiator::start(psk, identity, self.payload.clone(), session_id, unix_ms)?;
        if self.attempts.len() == LIVE_ATTEMPTS {
            self.attempts.pop_front();
        }
        self.attempts.push_back(ini);
        self.sent += 1;
        self.next_at = now_ms + RETRY_MS + jitter_ms;
        Ok(match self.cookie {
            Some((c, until)) if now_ms < until => attach_cookie(&msg, &c),
            _ => msg,
        })
    }

    /// Reads a message 2.
    pub fn read(&mut self, dgram: &[u8]) -> Answer {
        for i in 0..self.attempts.len() {
            let session_id = self.attempts[i].session_id();
            match self.attempts[i].read_response(dgram) {
                Ok(None) => continue,
                Ok(Some(outcome)) => {
                    self.attempts.clear();
                    return Answer::Accepted {
                        session_id,
                        outcome,
                    };
                }
                Err(_) => return Answer::Forged,
            }
        }
        Answer::Unrelated
    }
}
