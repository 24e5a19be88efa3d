//! Packet protection: one AEAD seal per datagram.
//!
//! ```text
//! datagram = header (16 B) ‖ ciphertext ‖ tag (16 B)
//! header   = type u8 ‖ flags u8 ‖ 2 reserved zero bytes ‖ receiver session id u32 LE ‖ counter u64 LE
//! flags    = bit 0: key phase (which of the session's two live key sets sealed it); others zero
//! nonce    = 4 zero bytes ‖ counter u64 LE        associated data = header
//! ```
//!
//! With `none` the payload stays in the clear but is still authenticated:
//! the tag is AES-256-GCM's over an empty plaintext with the whole datagram
//! (header and payload) as associated data, i.e. GMAC.
//!
//! Each direction has its own key (from the handshake, then from each key
//! update) and its own counter, so a (key, nonce) pair never repeats as long
//! as the counter never wraps; the sealer refuses to wrap. The opener checks the replay window before
//! decrypting (cheap rejection) and marks it only after the tag verifies.
//! Both work on caller-owned buffers: no allocation per datagram.

use crate::replay::ReplayWindow;
pub use crate::CryptoError;
use ring::aead;

/// Outer header length.
pub const HEADER_LEN: usize = 16;
/// AEAD tag length (every cipher kind has one, `none` included).
pub const TAG_LEN: usize = 16;
/// Header flag: the key phase bit.
pub const FLAG_KEY_PHASE: u8 = 1;
pub use crate::messages::{
    is_sealed_type, MSG_CLOSE, MSG_DATA, MSG_FEEDBACK, MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_RESPONSE,
    MSG_PROBE, MSG_REKEY,
};

/// The data cipher. Both directions of a session use the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CipherKind {
    /// AES-256-GCM (`aes`), the default: hardware-accelerated almost everywhere.
    #[default]
    Aes256Gcm,
    /// AES-128-GCM (`aes-128`): the first 16 bytes of the direction key.
    Aes128Gcm,
    /// ChaCha20-Poly1305 (`chacha20`): fast without AES instructions.
    ChaCha20Poly1305,
    /// No encryption (`none`), for links that are already private (e.g.
    /// inside another VPN). Still authenticated: a GMAC tag (AES-256-GCM
    /// over an empty plaintext, the datagram as associated data), so nobody
    /// without the keys can inject, close, move or replay.
    None,
}

/// Names the original kcpvpn accepted that we refuse: weaker, obsolete or
/// unauthenticated. Refusing (instead of mapping them to something else)
/// means a configuration never gets silently weaker or silently different.
pub const REFUSED_CIPHERS: &[&str] = &[
    "aes-192", "salsa20", "blowfish", "twofish", "cast5", "3des", "tea", "xtea", "xor", "sm4",
];
const CHOICES: &str =
    "aes (AES-256-GCM, default), aes-128 (AES-128-GCM), chacha20 (ChaCha20-Poly1305), none";

impl CipherKind {
    pub const ALL: [CipherKind; 4] = [
        CipherKind::Aes256Gcm,
        CipherKind::Aes128Gcm,
        CipherKind::ChaCha20Poly1305,
        CipherKind::None,
    ];

    /// Parses a command-line / configuration name (case-insensitive).
    pub fn parse(name: &str) -> Result<CipherKind, CryptoError> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "aes" | "aes-256" | "aes-256-gcm" => Ok(CipherKind::Aes256Gcm),
            "aes-128" | "aes-128-gcm" => Ok(CipherKind::Aes128Gcm),
            "chacha20" | "chacha20-poly1305" => Ok(CipherKind::ChaCha20Poly1305),
            "none" => Ok(CipherKind::None),
            n if REFUSED_CIPHERS.contains(&n) => Err(CryptoError::UnsupportedCipher(format!(
                "cipher {name:?} is no longer supported (kcpvpn only uses authenticated encryption); \
                 choose one of: {CHOICES}"
            ))),
            _ => Err(CryptoError::UnsupportedCipher(format!("unknown cipher {name:?}; choose one of: {CHOICES}"))),
        }
    }

    /// The canonical name, accepted by [`CipherKind::parse`].
    pub const fn name(self) -> &'static str {
        match self {
            CipherKind::Aes256Gcm => "aes",
            CipherKind::Aes128Gcm => "aes-128",
            CipherKind::ChaCha20Poly1305 => "chacha20",
            CipherKind::None => "none",
        }
    }

    /// What it is, for help texts.
    pub const fn description(self) -> &'static str {
        match self {
            CipherKind::Aes256Gcm => "AES-256-GCM",
            CipherKind::Aes128Gcm => "AES-128-GCM",
            CipherKind::ChaCha20Poly1305 => "ChaCha20-Poly1305",
            CipherKind::None => "no encryption, authenticated (GMAC)",
        }
    }

    /// The code carried in handshake message 1.
    pub const fn to_wire(self) -> u8 {
        match self {
            CipherKind::None => 0,
            CipherKind::Aes256Gcm => 1,
            CipherKind::Aes128Gcm => 2,
            CipherKind::ChaCha20Poly1305 => 3,
        }
    }

    pub const fn from_wire(code: u8) -> Option<CipherKind> {
        match code {
            0 => Some(CipherKind::None),
            1 => Some(CipherKind::Aes256Gcm),
            2 => Some(CipherKind::Aes128Gcm),
            3 => Some(CipherKind::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// Tag bytes appended to each datagram.
    pub const fn tag_len(self) -> usize {
        TAG_LEN
    }

    /// Whether the payload is encrypted (all but `none`).
    pub const fn encrypts(self) -> bool {
        !matches!(self, CipherKind::None)
    }

    /// Bytes a datagram carries on top of its plaintext.
    pub const fn overhead(self) -> usize {
        HEADER_LEN + self.tag_len()
    }

    fn key(self, key: &[u8; 32]) -> aead::LessSafeKey {
        let (alg, k): (&'static aead::Algorithm, &[u8]) = match self {
            CipherKind::Aes256Gcm | CipherKind::None => (&aead::AES_256_GCM, key),
            CipherKind::Aes128Gcm => (&aead::AES_128_GCM, &key[..16]),
            CipherKind::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, key),
        };
        // Key lengths are fixed above, so `new` cannot fail.
        aead::LessSafeKey::new(
            aead::UnboundKey::new(alg, k).expect("key length matches the algorithm"),
        )
    }
}

impl std::fmt::Display for CipherKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CipherKind {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CipherKind::parse(s)
    }
}

/// The outer header of a data, close or feedback datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u8,
    /// Key phase, 0 or 1 (see [`FLAG_KEY_PHASE`]).
    pub phase: u8,
    /// The session id the receiver chose for itself in the handshake.
    pub receiver_id: u32,
    pub counter: u64,
}

impl Header {
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = self.msg_type;
        h[1] = self.phase & FLAG_KEY_PHASE;
        h[4..8].copy_from_slice(&self.receiver_id.to_le_bytes());
        h[8..16].copy_from_slice(&self.counter.to_le_bytes());
        h
    }
}

/// Reads the header of a data, close or feedback datagram without
/// decrypting, so the caller can route by receiver session id first. `None`
/// when the datagram is too short for a header, is another message type, or
/// has unknown flags or non-zero reserved bytes.
#[inline]
pub fn peek_header(datagram: &[u8]) -> Option<Header> {
    let h: &[u8; HEADER_LEN] = datagram.get(..HEADER_LEN)?.try_into().ok()?;
    if !is_sealed_type(h[0]) || h[1] & !FLAG_KEY_PHASE != 0 || h[2..4] != [0, 0] {
        return None;
    }
    Some(Header {
        msg_type: h[0],
        phase: h[1],
        receiver_id: u32::from_le_bytes(h[4..8].try_into().ok()?),
        counter: u64::from_le_bytes(h[8..16].try_into().ok()?),
    })
}

#[inline]
fn nonce(counter: u64) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// Packet-protection counters (each side fills the ones it uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    pub sealed: u64,
    pub opened: u64,
    pub auth_failures: u64,
    /// Already received (inside the window).
    pub replays: u64,
    /// Behind the replay window.
    pub too_old: u64,
    pub truncated: u64,
    pub bad_type: u64,
}

/// Seals datagrams for one direction of one session.
pub struct Sealer {
    kind: CipherKind,
    key: aead::LessSafeKey,
    receiver_id: u32,
    phase: u8,
    /// Next counter to use; never reused, never wraps.
    counter: u64,
    stats: PacketStats,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("kind", &self.kind)
            .field("receiver_id", &self.receiver_id)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// `key` is this direction's 32-byte key; `receiver_id` the session id
    /// the peer chose (written in every header so the peer can route).
    pub fn new(kind: CipherKind, key: &[u8; 32], receiver_id: u32) -> Sealer {
        Sealer::with_phase(kind, key, receiver_id, 0)
    }

    /// As `new`, for the key set of key phase `phase` (0 or 1).
    pub fn with_phase(kind: CipherKind, key: &[u8; 32], receiver_id: u32, phase: u8) -> Sealer {
        Sealer {
            kind,
            key: kind.key(key),
            receiver_id,
            phase: phase & FLAG_KEY_PHASE,
            counter: 0,
            stats: PacketStats::default(),
        }
    }

    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    pub fn receiver_id(&self) -> u32 {
        self.receiver_id
    }

    /// The counter the next datagram will carry (= datagrams sealed so far).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    /// Reserves the next counter and writes the header.
    #[inline]
    fn next_header(&mut self, msg_type: u8) -> Result<[u8; HEADER_LEN], CryptoError> {
        if !is_sealed_type(msg_type) {
            return Err(CryptoError::BadType);
        }
        // u64::MAX is never used, so "counter + 1" below cannot overflow and
        // the last nonce is never followed by a repeat of the first.
        if self.counter == u64::MAX {
            return Err(CryptoError::CounterExhausted);
        }
        let h = Header {
            msg_type,
            phase: self.phase,
            receiver_id: self.receiver_id,
            counter: self.counter,
        }
        .encode();
        self.counter += 1;
        Ok(h)
    }

    /// Seals `buf` in place. Layout on entry: `HEADER_LEN` bytes of headroom,
    /// the plaintext, then `kind.tag_len()` bytes of tailroom (contents of
    /// both ignored). On return `buf` is the datagram. The cheapest path:
    /// the caller writes its payload at offset `HEADER_LEN` of a reused buffer.
    #[inline]
    pub fn seal_in_place(&mut self, msg_type: u8, buf: &mut [u8]) -> Result<(), CryptoError> {
        let tag_len = self.kind.tag_len();
        if buf.len() < HEADER_LEN + tag_len {
            return Err(CryptoError::Truncated);
        }
        let h = self.next_header(msg_type)?;
        buf[..HEADER_LEN].copy_from_slice(&h);
        let n = buf.len() - tag_len;
        let counter = self.counter - 1;
        let (sealed, tag_out) = buf.split_at_mut(n);
        let tag = if self.kind.encrypts() {
            let (_, body) = sealed.split_at_mut(HEADER_LEN);
            self.key
                .seal_in_place_separate_tag(nonce(counter), aead::Aad::from(&h), body)
        } else {
            self.key
                .seal_in_place_separate_tag(nonce(counter), aead::Aad::from(&*sealed), &mut [])
        }
        .map_err(|_| CryptoError::CounterExhausted)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.stats.sealed += 1;
        Ok(())
    }

    /// Seals `plaintext` into `out`, replacing its contents with the
    /// datagram. No allocation once `out` has grown to the datagram size.
    #[inline]
    pub fn seal_into(
        &mut self,
        msg_type: u8,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let h = self.next_header(msg_type)?;
        out.clear();
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&h);
        out.extend_from_slice(plaintext);
        let n = nonce(self.counter - 1);
        let tag = if self.kind.encrypts() {
            self.key
                .seal_in_place_separate_tag(n, aead::Aad::from(&h), &mut out[HEADER_LEN..])
        } else {
            self.key
                .seal_in_place_separate_tag(n, aead::Aad::from(&out[..]), &mut [])
        }
        .map_err(|_| CryptoError::CounterExhausted)?;
        out.extend_from_slice(tag.as_ref());
        self.stats.sealed += 1;
        Ok(())
    }

    /// For tests: continue from a given counter (e.g. near exhaustion).
    #[doc(hidden)]
    pub fn set_counter_for_testing(&mut self, counter: u64) {
        self.counter = counter;
    }
}

/// An authenticated datagram, decrypted in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub msg_type: u8,
    pub phase: u8,
    pub receiver_id: u32,
    pub counter: u64,
    /// The plaintext, inside the caller's datagram buffer.
    pub payload: &'a mut [u8],
}

/// Opens datagrams for one direction of one session.
pub struct Opener {
    kind: CipherKind,
    key: aead::LessSafeKey,
    window: ReplayWindow,
    stats: PacketStats,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("kind", &self.kind)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub fn new(kind: CipherKind, key: &[u8; 32]) -> Opener {
        Opener {
            kind,
            key: kind.key(key),
            window: ReplayWindow::new(),
            stats: PacketStats::default(),
        }
    }

    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    /// Authenticates and decrypts `datagram` in place. On success the
    /// plaintext is a sub-slice of `datagram`; on failure the error says why
    /// (and is counted), and the replay window is unchanged.
    #[inline]
    pub fn open_in_place<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Opened<'a>, CryptoError> {
        let r = self.open_inner(datagram);
        if let Err(e) = &r {
            let s = &mut self.stats;
            match e {
                CryptoError::Truncated => s.truncated += 1,
                CryptoError::BadType => s.bad_type += 1,
                CryptoError::Replayed => s.replays += 1,
                CryptoError::TooOld => s.too_old += 1,
                _ => s.auth_failures += 1,
            }
        }
        r
    }

    #[inline]
    fn open_inner<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Opened<'a>, CryptoError> {
        if datagram.len() < HEADER_LEN + self.kind.tag_len() {
            return Err(CryptoError::Truncated);
        }
        let hdr = peek_header(datagram).ok_or(CryptoError::BadType)?;
        // Cheap rejection before any decryption work; marking waits for the tag.
        self.window.check(hdr.counter)?;
        let payload = if self.kind.encrypts() {
            let (head, body) = datagram.split_at_mut(HEADER_LEN);
            &mut *self
                .key
                .open_in_place(nonce(hdr.counter), aead::Aad::from(&*head), body)
                .map_err(|_| CryptoError::AuthFailed)?
        } else {
            let n = datagram.len() - TAG_LEN;
            let (clear, tag) = datagram.split_at_mut(n);
            self.key
                .open_in_place(nonce(hdr.counter), aead::Aad::from(&*clear), tag)
                .map_err(|_| CryptoError::AuthFailed)?;
            &mut clear[HEADER_LEN..]
        };
        self.window.mark(hdr.counter);
        self.stats.opened += 1;
        Ok(Opened {
            msg_type: hdr.msg_type,
            phase: hdr.phase,
            receiver_id: hdr.receiver_id,
            counter: hdr.counter,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [7u8; 32];

    fn pair(kind: CipherKind) -> (Sealer, Opener) {
        (Sealer::new(kind, &K, 0xdead_beef), Opener::new(kind, &K))
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in CipherKind::ALL {
            let (mut s, mut o) = pair(kind);
            let mut buf = Vec::new();
            for i in 0..3u8 {
                let msg = vec![i; 100 + i as usize];
                s.seal_into(MSG_DATA, &msg, &mut buf).unwrap();
                assert_eq!(buf.len(), msg.len() + kind.overhead());
                let h = peek_header(&buf).unwrap();
                assert_eq!(
                    h,
                    Header {
                        msg_type: MSG_DATA,
                        phase: 0,
                        receiver_id: 0xdead_beef,
                        counter: i as u64
                    }
                );
                if kind != CipherKind::None {
                    assert_ne!(
                        &buf[HEADER_LEN..HEADER_LEN + msg.len()],
                        &msg[..],
                        "{kind} must encrypt"
                    );
                }
                let opened = o.open_in_place(&mut buf).unwrap();
                assert_eq!(opened.payload, &msg[..]);
                assert_eq!(opened.counter, i as u64);
                assert_eq!(opened.msg_type, MSG_DATA);
            }
            assert_eq!(s.stats().sealed, 3);
            assert_eq!(o.stats().opened, 3);
        }
    }

    #[test]
    fn in_place_matches_seal_into() {
        for kind in CipherKind::ALL {
            let (mut a, _) = pair(kind);
            let (mut b, mut o) = pair(kind);
            let msg = b"hello, in place";
            let mut v = Vec::new();
            a.seal_into(MSG_CLOSE, msg, &mut v).unwrap();
            let mut buf = vec![0xAAu8; HEADER_LEN + msg.len() + kind.tag_len()];
            buf[HEADER_LEN..HEADER_LEN + msg.len()].copy_from_slice(msg);
            b.seal_in_place(MSG_CLOSE, &mut buf).unwrap();
            assert_eq!(v, buf);
            let opened = o.open_in_place(&mut buf).unwrap();
            assert_eq!(opened.msg_type, MSG_CLOSE);
            assert_eq!(opened.payload, msg);
        }
    }

    #[test]
    fn empty_payload_is_a_valid_datagram() {
        let (mut s, mut o) = pair(CipherKind::Aes256Gcm);
        let mut buf = Vec::new();
        s.seal_into(MSG_DATA, &[], &mut buf).unwrap();
        assert_eq!(buf.len(), HEADER_LEN + TAG_LEN);
        assert!(o.open_in_place(&mut buf).unwrap().payload.is_empty());
    }

    #[test]
    fn replay_is_refused_and_counted() {
        let (mut s, mut o) = pair(CipherKind::ChaCha20Poly1305);
        let mut buf = Vec::new();
        s.seal_into(MSG_DATA, b"x", &mut buf).unwrap();
        let copy = buf.clone();
        o.open_in_place(&mut buf).unwrap();
        let mut again = copy.clone();
        assert_eq!(o.open_in_place(&mut again), Err(CryptoError::Replayed));
        assert_eq!(o.stats().replays, 1);
    }

    #[test]
    fn far_behind_is_too_old() {
        let (mut s, mut o) = pair(CipherKind::Aes128Gcm);
        let mut old = Vec::new();
        s.seal_into(MSG_DATA, b"old", &mut old).unwrap();
        s.set_counter_for_testing(100_000);
        let mut new = Vec::new();
        s.seal_into(MSG_DATA, b"new", &mut new).unwrap();
        o.open_in_place(&mut new).unwrap();
        assert_eq!(o.open_in_place(&mut old), Err(CryptoError::TooOld));
        assert_eq!(o.stats().too_old, 1);
    }

    #[test]
    fn forgery_does_not_move_the_window() {
        let (mut s, mut o) = pair(CipherKind::Aes256Gcm);
        let mut good = Vec::new();
        s.seal_into(MSG_DATA, b"payload", &mut good).unwrap();
        // A forged datagram with the same counter: must fail auth and must
        // not mark the counter, so the genuine one still gets through.
        let mut forged = good.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(o.open_in_place(&mut forged), Err(CryptoError::AuthFailed));
        // A forged header (counter far ahead) must not advance the window.
        let mut ahead = good.clone();
        ahead[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
        assert_eq!(o.open_in_place(&mut ahead), Err(CryptoError::AuthFailed));
        assert_eq!(o.open_in_place(&mut good).unwrap().payload, b"payload");
        assert_eq!(o.stats().auth_failures, 2);
    }

    #[test]
    fn header_is_authenticated() {
        let (mut s, mut o) = pair(CipherKind::ChaCha20Poly1305);
        let mut d = Vec::new();
        // Turning data into a close or a feedback (or back) needs the key.
        for (i, byte) in [(0usize, MSG_CLOSE), (0, MSG_FEEDBACK), (4, 0x12)] {
            s.seal_into(MSG_DATA, b"abc", &mut d).unwrap();
            d[i] = byte;
            assert_eq!(
                o.open_in_place(&mut d),
                Err(CryptoError::AuthFailed),
                "byte {i}"
            );
        }
    }

    #[test]
    fn wrong_key_or_kind_fails() {
        let mut s = Sealer::new(CipherKind::Aes256Gcm, &K, 1);
        let mut d = Vec::new();
        s.seal_into(MSG_DATA, b"abc", &mut d).unwrap();
        let mut o = Opener::new(CipherKind::Aes256Gcm, &[8u8; 32]);
        assert_eq!(
            o.open_in_place(&mut d.clone()),
            Err(CryptoError::AuthFailed)
        );
        let mut o = Opener::new(CipherKind::ChaCha20Poly1305, &K);
        assert_eq!(
            o.open_in_place(&mut d.clone()),
            Err(CryptoError::AuthFailed)
        );
        let mut o = Opener::new(CipherKind::Aes128Gcm, &K);
        assert_eq!(o.open_in_place(&mut d), Err(CryptoError::AuthFailed));
    }

    #[test]
    fn aes128_uses_first_half_of_key() {
        let mut k2 = K;
        k2[20] ^= 0xff; // differs only in the unused half
        let mut s = Sealer::new(CipherKind::Aes128Gcm, &K, 1);
        let mut o = Opener::new(CipherKind::Aes128Gcm, &k2);
        let mut d = Vec::new();
        s.seal_into(MSG_DATA, b"abc", &mut d).unwrap();
        assert!(o.open_in_place(&mut d).is_ok());
    }

    #[test]
    fn feedback_is_sealed_and_opened_like_data() {
        for kind in CipherKind::ALL {
            let (mut s, mut o) = pair(kind);
            let mut d = Vec::new();
            s.seal_into(MSG_DATA, b"data", &mut d).unwrap();
            o.open_in_place(&mut d).unwrap();
            s.seal_into(MSG_FEEDBACK, b"\x01report!", &mut d).unwrap();
            assert_eq!(peek_header(&d).unwrap().msg_type, MSG_FEEDBACK);
            let opened = o.open_in_place(&mut d).unwrap();
            // Same counter space as data: the second datagram of the direction.
            assert_eq!((opened.msg_type, opened.counter), (MSG_FEEDBACK, 1));
            assert_eq!(opened.payload, b"\x01report!");
        }
        // Type 5 (the unauthenticated rejection hint) is still not a sealed type.
        let mut d = [0u8; 40];
        d[0] = 5;
        assert_eq!(
            pair(CipherKind::None).1.open_in_place(&mut d),
            Err(CryptoError::BadType)
        );
    }

    #[test]
    fn malformed_input_errors() {
        let (_, mut o) = pair(CipherKind::Aes256Gcm);
        assert_eq!(o.open_in_place(&mut []), Err(CryptoError::Truncated));
        assert_eq!(o.open_in_place(&mut [3u8; 31]), Err(CryptoError::Truncated));
        let mut d = [0u8; 40];
        d[0] = 9;
        assert_eq!(o.open_in_place(&mut d), Err(CryptoError::BadType));
        d[0] = MSG_DATA;
        d[2] = 1;
        assert_eq!(o.open_in_place(&mut d), Err(CryptoError::BadType));
        d[2] = 0;
        d[1] = 2; // an unknown flag
        assert_eq!(o.open_in_place(&mut d), Err(CryptoError::BadType));
        let s = o.stats();
        assert_eq!((s.truncated, s.bad_type, s.opened), (2, 3, 0));
        // `none` needs a tag too: a bare header is refused, a forged tag fails.
        let (_, mut o) = pair(CipherKind::None);
        assert_eq!(o.open_in_place(&mut [3u8; 31]), Err(CryptoError::Truncated));
        let mut d = [0u8; 32];
        d[0] = MSG_DATA;
        assert_eq!(o.open_in_place(&mut d), Err(CryptoError::AuthFailed));
    }

    #[test]
    fn none_is_clear_but_authenticated() {
        let (mut s, mut o) = pair(CipherKind::None);
        let mut d = Vec::new();
        s.seal_into(MSG_DATA, b"in the clear", &mut d).unwrap();
        assert_eq!(&d[HEADER_LEN..HEADER_LEN + 12], b"in the clear");
        // Any change to the header, the payload or the tag is caught.
        for i in [0usize, 5, 9, HEADER_LEN, HEADER_LEN + 11, d.len() - 1] {
            let mut bad = d.clone();
            bad[i] ^= if i == 0 { 0 } else { 0x40 };
            if i == 0 {
                bad[8] ^= 1; // the counter instead of the type (keeps it sealed)
            }
            assert!(o.open_in_place(&mut bad).is_err(), "byte {i}");
        }
        assert_eq!(o.open_in_place(&mut d).unwrap().payload, b"in the clear");
        // In place gives the same datagram as seal_into.
        let (mut a, _) = pair(CipherKind::None);
        let mut buf = vec![0u8; HEADER_LEN + 12 + TAG_LEN];
        buf[HEADER_LEN..HEADER_LEN + 12].copy_from_slice(b"in the clear");
        a.seal_in_place(MSG_DATA, &mut buf).unwrap();
        let mut v = Vec::new();
        Sealer::new(CipherKind::None, &K, 0xdead_beef)
            .seal_into(MSG_DATA, b"in the clear", &mut v)
            .unwrap();
        assert_eq!(buf, v);
    }

    #[test]
    fn the_key_phase_travels_in_the_header_and_is_authenticated() {
        for kind in CipherKind::ALL {
            let mut s = Sealer::with_phase(kind, &K, 7, 1);
            let mut o = Opener::new(kind, &K);
            let mut d = Vec::new();
            s.seal_into(MSG_DATA, b"phase one", &mut d).unwrap();
            assert_eq!(d[1], FLAG_KEY_PHASE);
            assert_eq!(peek_header(&d).unwrap().phase, 1);
            let mut flipped = d.clone();
            flipped[1] = 0;
            assert_eq!(o.open_in_place(&mut flipped), Err(CryptoError::AuthFailed));
            let opened = o.open_in_place(&mut d).unwrap();
            assert_eq!((opened.phase, &opened.payload[..]), (1, &b"phase one"[..]));
        }
    }

    #[test]
    fn counter_exhaustion_refuses_to_wrap() {
        let (mut s, _) = pair(CipherKind::Aes256Gcm);
        s.set_counter_for_testing(u64::MAX - 1);
        let mut d = Vec::new();
        s.seal_into(MSG_DATA, b"last", &mut d).unwrap();
        assert_eq!(peek_header(&d).unwrap().counter, u64::MAX - 1);
        assert_eq!(
            s.seal_into(MSG_DATA, b"wrap", &mut d),
            Err(CryptoError::CounterExhausted)
        );
        let mut buf = [0u8; 40];
        assert_eq!(
            s.seal_in_place(MSG_DATA, &mut buf),
            Err(CryptoError::CounterExhausted)
        );
        assert!(CryptoError::CounterExhausted.to_string().contains("rekey"));
    }

    #[test]
    fn sealer_refuses_handshake_types() {
        let (mut s, _) = pair(CipherKind::Aes256Gcm);
        let mut d = Vec::new();
        assert_eq!(
            s.seal_into(MSG_HANDSHAKE_INIT, b"", &mut d),
            Err(CryptoError::BadType)
        );
        assert_eq!(s.counter(), 0, "a refused seal must not consume a counter");
    }

    #[test]
    fn cipher_names() {
        for kind in CipherKind::ALL {
            assert_eq!(CipherKind::parse(kind.name()).unwrap(), kind);
            assert_eq!(CipherKind::from_wire(kind.to_wire()), Some(kind));
        }
        assert_eq!(CipherKind::parse("AES").unwrap(), CipherKind::Aes256Gcm);
        assert_eq!(CipherKind::default(), CipherKind::Aes256Gcm);
        for old in REFUSED_CIPHERS {
            let e = CipherKind::parse(old).unwrap_err().to_string();
            assert!(
                e.contains("no longer supported") && e.contains("chacha20"),
                "{e}"
            );
        }
        let e = CipherKind::parse("rot13").unwrap_err().to_string();
        assert!(e.contains("unknown cipher") && e.contains("aes-128"), "{e}");
        assert_eq!(CipherKind::from_wire(9), None);
    }

    #[test]
    fn seal_into_reuses_the_buffer() {
        let (mut s, _) = pair(CipherKind::Aes256Gcm);
        let mut d = Vec::with_capacity(2048);
        let p = d.as_ptr();
        for _ in 0..10 {
            s.seal_into(MSG_DATA, &[0u8; 1400], &mut d).unwrap();
        }
        assert_eq!(
            p,
            d.as_ptr(),
            "no reallocation once the buffer is large enough"
        );
    }
}
