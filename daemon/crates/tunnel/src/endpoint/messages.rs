//! The endpoint's view of the wire: which message a datagram is (from the
//! one registry, [`kcpvpn_crypto::messages`]) and the one unsealed message
//! the endpoint itself builds, the reject hint (docs/protocol.md, 6.4).
pub use kcpvpn_crypto::messages::{MessageType, MSG_REJECT};

/// Reject hint: `[5, code, 0, 0, initiator's sender id u32 LE]`.
pub const REJECT_LEN: usize = 8;

/// Why the server could not take a message 1 (the hint's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectCode {
    AuthFailed = 1,
    Stale = 2,
    Replayed = 3,
}

impl RejectCode {
    pub fn from_byte(b: u8) -> Option<RejectCode> {
        Some(match b {
            1 => RejectCode::AuthFailed,
            2 => RejectCode::Stale,
            3 => RejectCode::Replayed,
            _ => return None,
        })
    }
}

/// A hint answering message 1 `init` (None if it is too short to name its sender).
pub fn encode_reject(init: &[u8], code: RejectCode) -> Option<[u8; REJECT_LEN]> {
    let sender = init.get(4..8)?;
    let mut hint = [MSG_REJECT, code as u8, 0, 0, 0, 0, 0, 0];
    hint[4..].copy_from_slice(sender);
    Some(hint)
}

/// (code, the initiator's sender id) of a reject hint; None if `d` is not
/// a well-formed one. An unknown code reads as `None` too.
pub fn decode_reject(d: &[u8]) -> Option<(RejectCode, u32)> {
    if d.len() != REJECT_LEN || d[0] != MSG_REJECT || d[2..4] != [0, 0] {
        return None;
    }
    let code = RejectCode::from_byte(d[1])?;
    Some((code, u32::from_le_bytes(d[4..8].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_reject_garbage() {
        let mut init = vec![1u8, 0, 0, 0, 0x78, 0x56, 0x34, 0x12];
        init.resize(263, 0);
        let h = encode_reject(&init, RejectCode::Stale).unwrap();
        assert_eq!(decode_reject(&h), Some((RejectCode::Stale, 0x1234_5678)));
        assert_eq!(encode_reject(&init[..7], RejectCode::Stale), None);
        let mut bad = h;
        bad[1] = 9;
        assert_eq!(decode_reject(&bad), None);
        assert_eq!(decode_reject(&h[..7]), None);
        bad = h;
        bad[2] = 1;
        assert_eq!(decode_reject(&bad), None);
    }
}
