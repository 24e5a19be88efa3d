//! The endpoint's view of the wire: which message a datagram is (from the
//! one registry, [`kcpvpn_crypto::messages`]) and the small unsealed
//! messages the endpoint builds itself: the reject hint (docs/protocol.md,
//! 6.4), the no-session hint (6.9) and the cookie (6.10).
pub use kcpvpn_crypto::messages::{MessageType, MSG_COOKIE, MSG_NO_SESSION, MSG_REJECT};

/// No-session hint: `[8, 0, 0, 0, receiver id u32 LE]`.
pub const NO_SESSION_LEN: usize = 8;
/// Cookie: `[9, 0, 0, 0, the message 1's sender id u32 LE, cookie (16)]`.
pub const COOKIE_LEN: usize = 16;
pub const COOKIE_MSG_LEN: usize = 8 + COOKIE_LEN;
/// Byte 1 of a message 1 with this bit set: the last `COOKIE_LEN` bytes
/// are the cookie the server gave this source, outside the Noise message.
pub const INIT_FLAG_COOKIE: u8 = 1;

pub fn encode_no_session(receiver_id: u32) -> [u8; NO_SESSION_LEN] {
    let mut m = [MSG_NO_SESSION, 0, 0, 0, 0, 0, 0, 0];
    m[4..].copy_from_slice(&receiver_id.to_le_bytes());
    m
}

pub fn decode_no_session(d: &[u8]) -> Option<u32> {
    if d.len() != NO_SESSION_LEN || d[0] != MSG_NO_SESSION || d[1..4] != [0, 0, 0] {
        return None;
    }
    Some(u32::from_le_bytes(d[4..8].try_into().ok()?))
}

pub fn encode_cookie(sender_id: u32, cookie: &[u8; COOKIE_LEN]) -> [u8; COOKIE_MSG_LEN] {
    let mut m = [0u8; COOKIE_MSG_LEN];
    m[0] = MSG_COOKIE;
    m[4..8].copy_from_slice(&sender_id.to_le_bytes());
    m[8..].copy_from_slice(cookie);
    m
}

/// (the message 1's sender id, cookie).
pub fn decode_cookie(d: &[u8]) -> Option<(u32, [u8; COOKIE_LEN])> {
    if d.len() != COOKIE_MSG_LEN || d[0] != MSG_COOKIE || d[1..4] != [0, 0, 0] {
        return None;
    }
    Some((
        u32::from_le_bytes(d[4..8].try_into().ok()?),
        d[8..].try_into().ok()?,
    ))
}

/// Splits a message 1 that carries a cookie: (the message 1 as the
/// handshake reads it, the cookie). None if it carries none or is too short.
pub fn split_cookie(init: &[u8]) -> Option<(Vec<u8>, [u8; COOKIE_LEN])> {
    if init.len() < 8 + COOKIE_LEN || init[1] & INIT_FLAG_COOKIE == 0 {
        return None;
    }
    let (msg, cookie) = init.split_at(init.len() - COOKIE_LEN);
    let mut msg = msg.to_vec();
    msg[1] &= !INIT_FLAG_COOKIE;
    Some((msg, cookie.try_into().ok()?))
}

/// A message 1 with `cookie` attached.
pub fn attach_cookie(init: &[u8], cookie: &[u8; COOKIE_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(init.len() + COOKIE_LEN);
    m.extend_from_slice(init);
    m[1] |= INIT_FLAG_COOKIE;
    m.extend_from_slice(cookie);
    m
}

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

    #[test]
    fn no_session_and_cookies_round_trip() {
        assert_eq!(decode_no_session(&encode_no_session(77)), Some(77));
        assert_eq!(decode_no_session(&encode_no_session(77)[..7]), None);
        let c = [7u8; COOKIE_LEN];
        assert_eq!(decode_cookie(&encode_cookie(5, &c)), Some((5, c)));
        let init: Vec<u8> = (0..263)
            .map(|i| if i < 4 { [1, 0, 0, 0][i] } else { i as u8 })
            .collect();
        let with = attach_cookie(&init, &c);
        assert_eq!(with.len(), 263 + COOKIE_LEN);
        assert_eq!(split_cookie(&with), Some((init.clone(), c)));
        assert_eq!(split_cookie(&init), None);
    }
}
