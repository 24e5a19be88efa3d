//! Key updates inside a session, sans-IO: the messages and the key schedule.
//!
//! Every few minutes (or after a message budget) the session's initiator
//! sends a fresh X25519 public key, sealed under the current keys; the
//! responder answers with its own. Both then derive the next key set from
//! the previous chain key and the new Diffie-Hellman secret:
//!
//! ```text
//! chain_0          = HKDF-SHA256(salt "kcpvpn rekey v1", ikm lo ‖ hi, info "chain"), 32 B
//!                    (lo, hi: the handshake's two direction keys in byte order)
//! (c2s, s2c, next) = HKDF-SHA256(salt chain_n, ikm X25519(e_i, e_r), info "kcpvpn rekey" ‖ epoch u32 LE), 96 B
//! ```
//!
//! So a key set depends on every DH secret before it (stealing today's keys
//! does not open yesterday's traffic once both sides erased the old ones,
//! and the next update heals a leak). Only holders of the current keys can
//! ask for one: the messages are sealed. Key material held here is zeroized
//! when dropped. The wire layout is in docs/protocol.md, section 5.1.

use crate::CryptoError;
use ring::{agreement, hkdf, rand};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Plaintext of a rekey message: kind u8, epoch u32 LE, public key 32 B.
pub const REKEY_LEN: usize = 1 + 4 + 32;
const KIND_INIT: u8 = 1;
const KIND_RESPONSE: u8 = 2;

/// A key update message (the plaintext of a sealed `MSG_REKEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyMessage {
    /// Initiator → responder: "move to `epoch`", with its ephemeral key.
    Init { epoch: u32, public: [u8; 32] },
    /// Responder → initiator: the answer for `epoch`, with its ephemeral key.
    Response { epoch: u32, public: [u8; 32] },
}

impl RekeyMessage {
    pub fn encode(&self) -> [u8; REKEY_LEN] {
        let (kind, epoch, public) = match *self {
            RekeyMessage::Init { epoch, public } => (KIND_INIT, epoch, public),
            RekeyMessage::Response { epoch, public } => (KIND_RESPONSE, epoch, public),
        };
        let mut b = [0u8; REKEY_LEN];
        b[0] = kind;
        b[1..5].copy_from_slice(&epoch.to_le_bytes());
        b[5..].copy_from_slice(&public);
        b
    }

    /// None for anything but an exact, known message.
    pub fn decode(b: &[u8]) -> Option<RekeyMessage> {
        if b.len() != REKEY_LEN {
            return None;
        }
        let epoch = u32::from_le_bytes(b[1..5].try_into().ok()?);
        let public: [u8; 32] = b[5..].try_into().ok()?;
        match b[0] {
            KIND_INIT => Some(RekeyMessage::Init { epoch, public }),
            KIND_RESPONSE => Some(RekeyMessage::Response { epoch, public }),
            _ => None,
        }
    }
}

/// Two direction keys: client → server and server → client.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct KeyPair {
    pub c2s: [u8; 32],
    pub s2c: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair { .. }")
    }
}

/// The secret each key update starts from.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey { .. }")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    // Only fails for lengths above 255 × 32 bytes.
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length within limits");
}

impl ChainKey {
    /// The chain key both sides derive from the handshake's two direction
    /// keys, given in either order (each side passes its send and receive
    /// key; sorted here, so both get the same).
    pub fn from_handshake(a: &[u8; 32], b: &[u8; 32]) -> ChainKey {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(lo);
        ikm[32..].copy_from_slice(hi);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"kcpvpn rekey v1").extract(&ikm);
        ikm.zeroize();
        let mut out = [0u8; 32];
        expand(&prk, &[b"chain"], &mut out);
        ChainKey(out)
    }

    /// The key set of `epoch` and the chain key after it.
    pub fn step(&self, shared: &SharedSecret, epoch: u32) -> (KeyPair, ChainKey) {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &self.0).extract(&shared.0);
        let mut out = [0u8; 96];
        expand(&prk, &[b"kcpvpn rekey", &epoch.to_le_bytes()], &mut out);
        let mut keys = KeyPair {
            c2s: [0; 32],
            s2c: [0; 32],
        };
        let mut next = [0u8; 32];
        keys.c2s.copy_from_slice(&out[..32]);
        keys.s2c.copy_from_slice(&out[32..64]);
        next.copy_from_slice(&out[64..]);
        out.zeroize();
        (keys, ChainKey(next))
    }
}

/// An X25519 Diffie-Hellman result.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; 32]);

/// One side's ephemeral key for one update. Its private half never leaves
/// ring and is gone after [`Ephemeral::agree`].
pub struct Ephemeral {
    private: agreement::EphemeralPrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral").finish_non_exhaustive()
    }
}

impl Ephemeral {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Ephemeral, CryptoError> {
        let rng = rand::SystemRandom::new();
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .map_err(|_| CryptoError::NoRandomness)?;
        let pk = private
            .compute_public_key()
            .map_err(|_| CryptoError::NoRandomness)?;
        let public: [u8; 32] = pk
            .as_ref()
            .try_into()
            .map_err(|_| CryptoError::NoRandomness)?;
        Ok(Ephemeral { private, public })
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The shared secret with the peer's public key. Fails for a key that
    /// gives no secret (a low-order point): the update is refused.
    pub fn agree(self, peer: &[u8; 32]) -> Result<SharedSecret, CryptoError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.private, &peer, |s| {
            let mut out = [0u8; 32];
            out.copy_from_slice(s);
            SharedSecret(out)
        })
        .map_err(|_| CryptoError::BadPublicKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_keys_and_each_epoch_differs() {
        let c0 = ChainKey::from_handshake(&[1; 32], &[2; 32]);
        assert_eq!(c0, ChainKey::from_handshake(&[1; 32], &[2; 32]));
        assert_eq!(c0, ChainKey::from_handshake(&[2; 32], &[1; 32]));
        assert_ne!(c0, ChainKey::from_handshake(&[2; 32], &[3; 32]));
        let (a, b) = (
            Ephemeral::generate().unwrap(),
            Ephemeral::generate().unwrap(),
        );
        let (pa, pb) = (a.public(), b.public());
        let sa = a.agree(&pb).unwrap();
        let sb = b.agree(&pa).unwrap();
        let (ka, na) = c0.step(&sa, 1);
        let (kb, nb) = c0.step(&sb, 1);
        assert_eq!((&ka, &na), (&kb, &nb));
        assert_ne!(ka.c2s, ka.s2c);
        let (k2, _) = c0.step(&sa, 2);
        assert_ne!(ka, k2, "the epoch is bound into the keys");
        let (k3, _) = na.step(&sa, 1);
        assert_ne!(ka, k3, "the chain is bound into the keys");
    }

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        for m in [
            RekeyMessage::Init {
                epoch: 7,
                public: [9; 32],
            },
            RekeyMessage::Response {
                epoch: u32::MAX,
                public: [3; 32],
            },
        ] {
            assert_eq!(RekeyMessage::decode(&m.encode()), Some(m));
        }
        let mut b = RekeyMessage::Init {
            epoch: 1,
            public: [0; 32],
        }
        .encode();
        assert_eq!(RekeyMessage::decode(&b[..REKEY_LEN - 1]), None);
        b[0] = 3;
        assert_eq!(RekeyMessage::decode(&b), None);
        assert_eq!(RekeyMessage::decode(&[]), None);
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let e = Ephemeral::generate().unwrap();
        assert_eq!(e.agree(&[0; 32]).err(), Some(CryptoError::BadPublicKey));
    }
}
