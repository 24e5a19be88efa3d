//! A session's packet keys over its life: the current sealer, the openers of
//! the (at most two) live key phases, and in-band key updates (rekeying),
//! sans-IO. docs/protocol.md, section 5.1.
//!
//! The initiator (the client) starts an update every `interval_ms`, or
//! sooner when either direction nears [`REKEY_AFTER_MESSAGES`]:
//!
//! ```text
//! initiator                                    responder
//! Init{e+1, pub_i}  (sealed, epoch e) ───────▶ derives epoch e+1, installs its
//!                                              opener; keeps sending under e
//!   ◀──────── Response{e+1, pub_r} (sealed, epoch e)
//! derives e+1, sends under it at once;
//! keeps e's opener for RETIRE_AFTER_MS ──────▶ first datagram under e+1:
//!                                              sends under e+1, keeps e's
//!                                              opener for RETIRE_AFTER_MS
//! ```
//!
//! No packet is lost across an update: each side can open both phases
//! while the other may still send under the old one, and a side only seals
//! under a new epoch once the peer can open it. A lost Init is sent again
//! (same key) every [`RETRY_MS`]; a repeated Init gets the same Response.

use kcpvpn_crypto::packet::{peek_header, CipherKind, CryptoError, Opened, Opener, Sealer};
use kcpvpn_crypto::rekey::{ChainKey, Ephemeral, KeyPair, RekeyMessage};

/// Default time between key updates (ms), as WireGuard's REKEY_AFTER_TIME.
pub const DEFAULT_REKEY_INTERVAL_MS: u32 = 120_000;
/// An update starts once either direction sealed this many datagrams under
/// one key (far inside AES-GCM's budget for one key).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 30;
/// The sealer refuses to go past this many datagrams under one key; the
/// session then sends nothing until an update completes.
pub const REJECT_AFTER_MESSAGES: u64 = 1 << 31;
/// An unanswered Init is sent again this often (ms).
pub const RETRY_MS: u32 = 1000;
/// The previous phase's opener is kept this long after the switch (ms), for
/// datagrams still on the path or reordered behind newer ones.
pub const RETIRE_AFTER_MS: u32 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// The epoch we seal under (0: the handshake's keys).
    pub epoch: u32,
    /// Key updates completed.
    pub rekeys: u64,
    /// Rekey messages sent and taken.
    pub rekey_out: u64,
    pub rekey_in: u64,
    /// Rekey messages that fit no update in progress (stale, repeated after
    /// the switch, a bad key): counted and ignored.
    pub rekey_ignored: u64,
    /// Datagrams under a key phase we do not hold (too late or too early).
    pub unknown_phase: u64,
}

struct RecvKey {
    epoch: u32,
    opener: Opener,
    /// Dropped at this time (ms); None while it is the newest.
    retire_at: Option<u32>,
}

enum Update {
    Idle,
    /// Initiator: Init sent, waiting for the Response.
    Asked {
        epoch: u32,
        ephemeral: Ephemeral,
        retry_at: u32,
    },
    /// Responder: answered; the new opener is installed, the new sender
    /// waits for the peer's first datagram under the new epoch.
    Answered {
        epoch: u32,
        peer_public: [u8; 32],
        our_public: [u8; 32],
        keys: KeyPair,
        /// The chain before this update, should the initiator start it over
        /// with another key (its first attempt failed at its end).
        prev_chain: ChainKey,
    },
}

pub struct Keys {
    kind: CipherKind,
    peer_id: u32,
    initiator: bool,
    interval_ms: u32,
    epoch: u32,
    sealer: Sealer,
    /// By key phase (epoch & 1).
    openers: [Option<RecvKey>; 2],
    chain: ChainKey,
    update: Update,
    epoch_since: u32,
    /// A rekey message waiting to be sealed and sent.
    outbox: Option<RekeyMessage>,
    /// Initiator: we seal under a new epoch the peer has not yet been seen
    /// to use; the previous epoch's opener stays until it is (the peer
    /// seals under the old one until it sees the new one from us).
    peer_behind: bool,
    /// Initiator: a datagram under the new keys is due at once, so the
    /// responder moves over even when no data flows.
    confirm_due: bool,
    pub stats: KeyStats,
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Keys {
    /// `send`/`recv`: this side's handshake keys; `initiator`: this side
    /// starts updates (every `interval_ms`; 0: never, except for the
    /// message budget).
    pub fn new(
        kind: CipherKind,
        send: &[u8; 32],
        recv: &[u8; 32],
        peer_id: u32,
        initiator: bool,
        interval_ms: u32,
        now: u32,
    ) -> Keys {
        let chain = ChainKey::from_handshake(send, recv);
        Keys {
            kind,
            peer_id,
            initiator,
            interval_ms,
            epoch: 0,
            sealer: Sealer::new(kind, send, peer_id),
            openers: [
                Some(RecvKey {
                    epoch: 0,
                    opener: Opener::new(kind, recv),
                    retire_at: None,
                }),
                None,
            ],
            chain,
            update: Update::Idle,
            epoch_since: now,
            outbox: None,
            peer_behind: false,
            confirm_due: false,
            stats: KeyStats::default(),
        }
    }

    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// Makes this side the one that starts updates, every `interval_ms`
    /// from `now` (0: only for the message budget).
    pub fn initiate(&mut self, interval_ms: u32, now: u32) {
        self.initiator = true;
        self.interval_ms = interval_ms;
        self.epoch_since = now;
    }

    /// The sealer for what we send now (None past the message budget).
    #[inline]
    pub fn sealer(&mut self) -> Option<&mut Sealer> {
        if self.sealer.counter() >= REJECT_AFTER_MESSAGES {
            return None;
        }
        Some(&mut self.sealer)
    }

    /// Opens a datagram with the key of its phase. On success, a first
    /// datagram under an epoch we answered moves our sending to it.
    #[inline]
    pub fn open<'a>(
        &mut self,
        datagram: &'a mut [u8],
        now: u32,
    ) -> Result<(u32, Opened<'a>), CryptoError> {
        let phase = match peek_header(datagram) {
            Some(h) => h.phase as usize,
            None => return Err(CryptoError::BadType),
        };
        let Some(rk) = self.openers[phase].as_mut() else {
            self.stats.unknown_phase += 1;
            return Err(CryptoError::AuthFailed);
        };
        let epoch = rk.epoch;
        let opened = rk.opener.open_in_place(datagram)?;
        if matches!(&self.update, Update::Answered { epoch: e, .. } if *e == epoch) {
            if let Update::Answered { keys, .. } = std::mem::replace(&mut self.update, Update::Idle)
            {
                self.switch_sending(epoch, &keys.s2c, now, true);
            }
        }
        if self.peer_behind && epoch == self.epoch {
            self.peer_behind = false;
            self.retire_other(epoch, now);
        }
        Ok((epoch, opened))
    }

    /// Seals under `epoch` from now on. The previous epoch's opener goes
    /// after a grace: from now (`retire_old`), or once the peer is seen
    /// under the new epoch.
    fn switch_sending(&mut self, epoch: u32, key: &[u8; 32], now: u32, retire_old: bool) {
        self.sealer = Sealer::with_phase(self.kind, key, self.peer_id, (epoch & 1) as u8);
        self.epoch = epoch;
        self.epoch_since = now;
        self.stats.epoch = epoch;
        self.stats.rekeys += 1;
        if retire_old {
            self.retire_other(epoch, now);
        }
    }

    fn retire_other(&mut self, epoch: u32, now: u32) {
        let old = &mut self.openers[((epoch & 1) ^ 1) as usize];
        if let Some(rk) = old {
            if rk.epoch != epoch {
                rk.retire_at = Some(now.wrapping_add(RETIRE_AFTER_MS));
            }
        }
    }

    fn install_opener(&mut self, epoch: u32, key: &[u8; 32]) {
        self.openers[(epoch & 1) as usize] = Some(RecvKey {
            epoch,
            opener: Opener::new(self.kind, key),
            retire_at: None,
        });
    }

    /// Takes a rekey message's plaintext (from a datagram already opened).
    pub fn on_rekey(&mut self, plain: &[u8], now: u32) {
        self.stats.rekey_in += 1;
        let Some(msg) = RekeyMessage::decode(plain) else {
            self.stats.rekey_ignored += 1;
            return;
        };
        match msg {
            RekeyMessage::Init { epoch, public } if !self.initiator => {
                self.on_init(epoch, public);
            }
            RekeyMessage::Response { epoch, public } if self.initiator => {
                self.on_response(epoch, public, now);
            }
            _ => self.stats.rekey_ignored += 1,
        }
    }

    fn on_init(&mut self, epoch: u32, public: [u8; 32]) {
        if let Update::Answered {
            epoch: e,
            peer_public,
            our_public,
            ..
        } = &self.update
        {
            if *e != epoch {
                self.stats.rekey_ignored += 1;
                return;
            }
            if *peer_public == public {
                // The answer was lost: the same answer again.
                self.outbox = Some(RekeyMessage::Response {
                    epoch,
                    public: *our_public,
                });
                return;
            }
            // The initiator started this update over with another key: so do
            // we, from the chain before it.
            let Update::Answered { prev_chain, .. } =
                std::mem::replace(&mut self.update, Update::Idle)
            else {
                unreachable!()
            };
            self.chain = prev_chain;
        }
        if epoch != self.epoch.wrapping_add(1) {
            self.stats.rekey_ignored += 1;
            return;
        }
        let Ok(ours) = Ephemeral::generate() else {
            self.stats.rekey_ignored += 1;
            return;
        };
        let our_public = ours.public();
        let Ok(shared) = ours.agree(&public) else {
            self.stats.rekey_ignored += 1;
            return;
        };
        let (keys, next) = self.chain.step(&shared, epoch);
        let prev_chain = std::mem::replace(&mut self.chain, next);
        self.install_opener(epoch, &keys.c2s);
        self.outbox = Some(RekeyMessage::Response {
            epoch,
            public: our_public,
        });
        self.update = Update::Answered {
            epoch,
            peer_public: public,
            our_public,
            keys,
            prev_chain,
        };
    }

    fn on_response(&mut self, epoch: u32, public: [u8; 32], now: u32) {
        if !matches!(&self.update, Update::Asked { epoch: e, .. } if *e == epoch) {
            // A repeated answer after the switch, or junk.
            self.stats.rekey_ignored += 1;
            return;
        }
        let Update::Asked { ephemeral, .. } = std::mem::replace(&mut self.update, Update::Idle)
        else {
            return;
        };
        let Ok(shared) = ephemeral.agree(&public) else {
            // A bad key: start over at the next retry.
            self.stats.rekey_ignored += 1;
            return;
        };
        let (keys, next) = self.chain.step(&shared, epoch);
        self.chain = next;
        self.install_opener(epoch, &keys.s2c);
        self.switch_sending(epoch, &keys.c2s, now, false);
        self.peer_behind = true;
        self.confirm_due = true;
    }

    fn wants_update(&self, now: u32) -> bool {
        let budget = self.sealer.counter() >= REKEY_AFTER_MESSAGES
            || self.openers.iter().flatten().any(|rk| {
                rk.epoch == self.epoch && rk.opener.stats().opened >= REKEY_AFTER_MESSAGES
            });
        budget
            || (self.interval_ms > 0
                && !after(self.epoch_since.wrapping_add(self.interval_ms), now))
    }

    /// Timers: starts or repeats an update, retires old openers.
    pub fn poll(&mut self, now: u32) {
        for slot in self.openers.iter_mut() {
            if slot
                .as_ref()
                .and_then(|rk| rk.retire_at)
                .is_some_and(|t| !after(t, now))
            {
                *slot = None;
            }
        }
        if !self.initiator {
            return;
        }
        let due = matches!(self.update, Update::Idle) && self.wants_update(now);
        match &mut self.update {
            Update::Asked {
                epoch,
                ephemeral,
                retry_at,
            } if !after(*retry_at, now) => {
                *retry_at = now.wrapping_add(RETRY_MS);
                self.outbox = Some(RekeyMessage::Init {
                    epoch: *epoch,
                    public: ephemeral.public(),
                });
            }
            Update::Idle if due => {
                let Ok(ephemeral) = Ephemeral::generate() else {
                    return;
                };
                let epoch = self.epoch.wrapping_add(1);
                self.outbox = Some(RekeyMessage::Init {
                    epoch,
                    public: ephemeral.public(),
                });
                self.update = Update::Asked {
                    epoch,
                    ephemeral,
                    retry_at: now.wrapping_add(RETRY_MS),
                };
            }
            _ => {}
        }
    }

    /// The next time `poll` has work.
    pub fn next_timeout(&self) -> Option<u32> {
        let mut t: Option<u32> = None;
        let mut earliest = |c: u32| {
            if t.is_none_or(|x| after(x, c)) {
                t = Some(c);
            }
        };
        for rk in self.openers.iter().flatten() {
            if let Some(r) = rk.retire_at {
                earliest(r);
            }
        }
        if self.initiator {
            match &self.update {
                Update::Asked { retry_at, .. } => earliest(*retry_at),
                Update::Idle if self.interval_ms > 0 => {
                    earliest(self.epoch_since.wrapping_add(self.interval_ms))
                }
                _ => {}
            }
        }
        t
    }

    /// Whether a datagram under the new keys is due at once (a keepalive
    /// will do): the initiator just moved to a new epoch.
    pub fn take_confirm(&mut self) -> bool {
        std::mem::take(&mut self.confirm_due)
    }

    /// A rekey message to seal and send, if one is due.
    pub fn take_outbox(&mut self) -> Option<RekeyMessage> {
        self.outbox.take()
    }

    /// Whether an opener of an older epoch is still live (for tests).
    pub fn live_epochs(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.openers.iter().flatten().map(|rk| rk.epoch).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcpvpn_crypto::packet::MSG_DATA;
    use kcpvpn_crypto::packet::MSG_REKEY;

    fn pair(interval: u32) -> (Keys, Keys) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (
            Keys::new(CipherKind::Aes256Gcm, &a, &b, 10, true, interval, 0),
            Keys::new(CipherKind::Aes256Gcm, &b, &a, 20, false, 0, 0),
        )
    }

    fn seal(k: &mut Keys, t: u8, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.sealer().unwrap().seal_into(t, plain, &mut out).unwrap();
        out
    }

    /// Delivers the pending rekey message of `from` to `to` (sealed and
    /// opened like any datagram).
    fn carry(from: &mut Keys, to: &mut Keys, now: u32) -> bool {
        let Some(m) = from.take_outbox() else {
            return false;
        };
        deliver(m, from, to, now);
        true
    }

    fn deliver(m: RekeyMessage, from: &mut Keys, to: &mut Keys, now: u32) {
        let mut d = seal(from, MSG_REKEY, &m.encode());
        let (_, o) = to.open(&mut d, now).unwrap();
        let plain = o.payload.to_vec();
        to.on_rekey(&plain, now);
    }

    fn data(from: &mut Keys, to: &mut Keys, now: u32) -> Result<u32, CryptoError> {
        let mut d = seal(from, MSG_DATA, b"payload");
        to.open(&mut d, now).map(|(e, _)| e)
    }

    #[test]
    fn an_update_moves_both_sides_without_losing_a_datagram() {
        let (mut c, mut s) = pair(1000);
        c.poll(999);
        assert!(c.take_outbox().is_none(), "not due yet");
        c.poll(1000);
        // A datagram sealed before the update arrives after it: still opens.
        let mut late = seal(&mut s, MSG_DATA, b"old");
        assert!(carry(&mut c, &mut s, 1001));
        assert_eq!(s.live_epochs(), vec![0, 1]);
        assert_eq!(
            data(&mut c, &mut s, 1002),
            Ok(0),
            "the client still seals under 0"
        );
        assert!(carry(&mut s, &mut c, 1003));
        assert_eq!(c.stats.epoch, 1);
        assert!(
            c.take_confirm(),
            "a datagram under the new keys is due at once"
        );
        assert!(!c.take_confirm());
        assert_eq!(
            data(&mut s, &mut c, 1004),
            Ok(0),
            "the server still seals under 0"
        );
        assert_eq!(data(&mut c, &mut s, 1005), Ok(1));
        assert_eq!(
            s.stats.epoch, 1,
            "the first datagram under 1 moved the server"
        );
        assert_eq!(data(&mut s, &mut c, 1006), Ok(1));
        assert_eq!(c.open(&mut late, 1007).unwrap().0, 0);
        // The old phase goes after the grace: the server's from its switch,
        // the client's from when it saw the server under the new epoch.
        c.poll(1003 + RETIRE_AFTER_MS);
        assert_eq!(c.live_epochs(), vec![0, 1]);
        c.poll(1006 + RETIRE_AFTER_MS);
        s.poll(1005 + RETIRE_AFTER_MS);
        assert_eq!((c.live_epochs(), s.live_epochs()), (vec![1], vec![1]));
        let mut stale = {
            let (a, b) = ([1u8; 32], [2u8; 32]);
            let mut k = Keys::new(CipherKind::Aes256Gcm, &b, &a, 10, false, 0, 0);
            seal(&mut k, MSG_DATA, b"x")
        };
        assert_eq!(
            c.open(&mut stale, 20_000).err(),
            Some(CryptoError::AuthFailed)
        );
        assert_eq!(c.stats.unknown_phase, 1);
        assert_eq!((c.stats.rekeys, s.stats.rekeys), (1, 1));
    }

    #[test]
    fn lost_messages_are_sent_again_and_repeats_change_nothing() {
        let (mut c, mut s) = pair(1000);
        c.poll(1000);
        let init = c.take_outbox().unwrap();
        c.poll(1000 + RETRY_MS);
        let again = c.take_outbox().unwrap();
        assert_eq!(again, init, "the same Init again");
        deliver(again, &mut c, &mut s, 2001);
        let resp = s.take_outbox().unwrap();
        // The Response is lost; the Init comes again: the same Response.
        c.poll(2000 + RETRY_MS);
        assert!(carry(&mut c, &mut s, 3001));
        assert_eq!(s.take_outbox(), Some(resp));
        deliver(resp, &mut s, &mut c, 3002);
        assert_eq!(c.stats.epoch, 1);
        // A duplicate Response after the switch is ignored.
        deliver(resp, &mut s, &mut c, 3003);
        assert_eq!((c.stats.epoch, c.stats.rekey_ignored), (1, 1));
        assert_eq!(data(&mut c, &mut s, 3004), Ok(1));
        assert_eq!(data(&mut s, &mut c, 3005), Ok(1));
    }

    #[test]
    fn an_update_started_over_with_another_key_still_completes() {
        let (mut c, mut s) = pair(1000);
        // The server answered a first Init, then the initiator (say, after a
        // bad answer) starts epoch 1 again with a new key.
        s.on_rekey(
            &RekeyMessage::Init {
                epoch: 1,
                public: Ephemeral::generate().unwrap().public(),
            }
            .encode(),
            1000,
        );
        assert!(s.take_outbox().is_some());
        c.poll(1000);
        assert!(carry(&mut c, &mut s, 1001));
        assert!(carry(&mut s, &mut c, 1002));
        assert_eq!(data(&mut c, &mut s, 1003), Ok(1));
        assert_eq!(data(&mut s, &mut c, 1004), Ok(1));
    }

    #[test]
    fn many_updates_in_a_row_keep_the_sides_in_step() {
        let (mut c, mut s) = pair(100);
        let mut now = 0;
        for round in 1..=25u32 {
            now += 100;
            c.poll(now);
            s.poll(now);
            assert!(carry(&mut c, &mut s, now));
            assert!(carry(&mut s, &mut c, now));
            assert_eq!(data(&mut c, &mut s, now), Ok(round));
            assert_eq!(data(&mut s, &mut c, now), Ok(round));
        }
        assert_eq!((c.stats.rekeys, s.stats.rekeys), (25, 25));
    }

    #[test]
    fn junk_and_misdirected_rekey_messages_are_ignored() {
        let (mut c, mut s) = pair(1000);
        s.on_rekey(b"short", 0);
        // An Init for an epoch that does not follow.
        s.on_rekey(
            &RekeyMessage::Init {
                epoch: 5,
                public: [9; 32],
            }
            .encode(),
            0,
        );
        // A low-order key.
        s.on_rekey(
            &RekeyMessage::Init {
                epoch: 1,
                public: [0; 32],
            }
            .encode(),
            0,
        );
        // A Response nobody asked for; an Init at the initiator.
        c.on_rekey(
            &RekeyMessage::Response {
                epoch: 1,
                public: [9; 32],
            }
            .encode(),
            0,
        );
        c.on_rekey(
            &RekeyMessage::Init {
                epoch: 1,
                public: [9; 32],
            }
            .encode(),
            0,
        );
        assert_eq!((s.stats.rekey_ignored, c.stats.rekey_ignored), (3, 2));
        assert!(s.take_outbox().is_none() && c.take_outbox().is_none());
        assert_eq!(data(&mut c, &mut s, 1), Ok(0));
        assert_eq!(data(&mut s, &mut c, 1), Ok(0));
    }

    #[test]
    fn the_message_budget_starts_an_update_and_the_hard_limit_stops_sending() {
        let (mut c, _) = pair(0);
        c.poll(1);
        assert!(c.take_outbox().is_none(), "interval 0: no timed updates");
        c.sealer.set_counter_for_testing(REKEY_AFTER_MESSAGES);
        c.poll(2);
        assert!(matches!(
            c.take_outbox(),
            Some(RekeyMessage::Init { epoch: 1, .. })
        ));
        c.sealer.set_counter_for_testing(REJECT_AFTER_MESSAGES);
        assert!(c.sealer().is_none());
    }
}
