//! kcpvpn's cryptography, sans-IO: bytes in, bytes out, time passed in.
//!
//! - [`messages`]: the one registry of outer message types.
//! - [`packet`]: one AEAD seal per datagram (AES-256-GCM, AES-128-GCM,
//!   ChaCha20-Poly1305 through `ring`, or `none`), with a 16-byte outer
//!   header used as associated data and a per-direction 64-bit counter as
//!   the nonce.
//! - [`rekey`]: key updates inside a session (ephemeral X25519, HKDF chain).
//! - [`replay`]: the sliding replay window (RFC 6479 style bitmap) that the
//!   packet opener consults before decrypting and marks after the tag
//!   verifies.
//! - [`handshake`]: the two-message Noise handshake (`NNpsk0`, or `IKpsk1`
//!   in identity mode, with static keys on both sides) that proves both
//!   sides hold the shared secret (and their keys), carries the session
//!   parameters and derives the per-direction packet keys; plus the Argon2id
//!   stretching of the human secret into the Noise PSK.
//!
//! Nothing here reads a clock, touches a socket or spawns a thread. Malformed
//! network input is an `Err` the caller counts, never a panic.
//!
//! The wire format is specified in `docs/protocol.md` (sections 1, 2 and 5).

pub mod handshake;
pub mod messages;
pub mod packet;
pub mod rekey;
pub mod replay;

/// Why a datagram could not be sealed or opened, or a cipher name was
/// refused. Each network-input failure is its own variant so that callers
/// can count them separately.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Shorter than the outer header plus the tag.
    #[error("truncated datagram: shorter than the outer header and tag")]
    Truncated,
    /// Not a data, close or feedback message, or the reserved header bytes are not zero.
    #[error("unexpected message type or non-zero reserved header bytes")]
    BadType,
    /// The counter was already received (inside the replay window).
    #[error("replayed datagram: counter already received")]
    Replayed,
    /// The counter is too far behind the newest one to be checked.
    #[error("datagram too old: counter is behind the replay window")]
    TooOld,
    /// The tag did not verify: wrong key, corrupted or forged datagram.
    #[error("authentication failed: wrong key, corrupted or forged datagram")]
    AuthFailed,
    /// The send counter would wrap; the nonce would repeat.
    #[error("send counter exhausted: a new handshake (rekey) is needed before sending more")]
    CounterExhausted,
    /// The system's random source failed (no key could be made).
    #[error("the system's random source failed; cannot make a key")]
    NoRandomness,
    /// The peer's public key gives no shared secret (a low-order point).
    #[error("the peer's public key is invalid (no shared secret)")]
    BadPublicKey,
    /// A cipher name that kcpvpn does not (or no longer) support.
    #[error("{0}")]
    UnsupportedCipher(String),
}
