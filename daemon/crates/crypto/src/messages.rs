//! The one registry of outer message types: byte 0 of every datagram kcpvpn
//! puts on the wire (docs/protocol.md, section 1). Every other module takes
//! its type codes from here, so two messages can never share a code.

/// What byte 0 of a datagram says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Handshake message 1, client → server (Noise, padded; unsealed).
    HandshakeInit = 1,
    /// Handshake message 2, server → client (Noise; unsealed).
    HandshakeResponse = 2,
    /// Session data: FEC shards, KCP segments, keepalives (sealed).
    Data = 3,
    /// An authenticated goodbye (sealed).
    Close = 4,
    /// The server's unauthenticated hint that message 1 failed (8 bytes).
    Reject = 5,
    /// A receiver's loss report for adaptive FEC (sealed).
    Feedback = 6,
    /// A path-MTU probe or its acknowledgement (sealed).
    Probe = 7,
    /// The server's unauthenticated hint that it has no session of that
    /// receiver id (8 bytes): the client checks with a new handshake.
    NoSession = 8,
    /// The server's cookie, under load, for the source of a message 1 (24 bytes).
    Cookie = 9,
    /// A key update inside a session: an ephemeral key and its answer (sealed).
    Rekey = 10,
}

impl MessageType {
    pub const ALL: [MessageType; 10] = [
        MessageType::HandshakeInit,
        MessageType::HandshakeResponse,
        MessageType::Data,
        MessageType::Close,
        MessageType::Reject,
        MessageType::Feedback,
        MessageType::Probe,
        MessageType::NoSession,
        MessageType::Cookie,
        MessageType::Rekey,
    ];

    #[inline]
    pub const fn from_byte(b: u8) -> Option<MessageType> {
        Some(match b {
            1 => MessageType::HandshakeInit,
            2 => MessageType::HandshakeResponse,
            3 => MessageType::Data,
            4 => MessageType::Close,
            5 => MessageType::Reject,
            6 => MessageType::Feedback,
            7 => MessageType::Probe,
            8 => MessageType::NoSession,
            9 => MessageType::Cookie,
            10 => MessageType::Rekey,
            _ => return None,
        })
    }

    /// Of a datagram (None: empty or an unknown type).
    #[inline]
    pub fn of(datagram: &[u8]) -> Option<MessageType> {
        datagram.first().and_then(|&b| MessageType::from_byte(b))
    }

    #[inline]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Sealed with the session's packet keys (routed by receiver id).
    #[inline]
    pub const fn is_sealed(self) -> bool {
        matches!(
            self,
            MessageType::Data
                | MessageType::Close
                | MessageType::Feedback
                | MessageType::Probe
                | MessageType::Rekey
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            MessageType::HandshakeInit => "handshake-init",
            MessageType::HandshakeResponse => "handshake-response",
            MessageType::Data => "data",
            MessageType::Close => "close",
            MessageType::Reject => "reject",
            MessageType::Feedback => "feedback",
            MessageType::Probe => "probe",
            MessageType::NoSession => "no-session",
            MessageType::Cookie => "cookie",
            MessageType::Rekey => "rekey",
        }
    }
}

pub const MSG_HANDSHAKE_INIT: u8 = MessageType::HandshakeInit.code();
pub const MSG_HANDSHAKE_RESPONSE: u8 = MessageType::HandshakeResponse.code();
pub const MSG_DATA: u8 = MessageType::Data.code();
pub const MSG_CLOSE: u8 = MessageType::Close.code();
pub const MSG_REJECT: u8 = MessageType::Reject.code();
pub const MSG_FEEDBACK: u8 = MessageType::Feedback.code();
pub const MSG_PROBE: u8 = MessageType::Probe.code();
pub const MSG_NO_SESSION: u8 = MessageType::NoSession.code();
pub const MSG_COOKIE: u8 = MessageType::Cookie.code();
pub const MSG_REKEY: u8 = MessageType::Rekey.code();

/// The message types sealed with the packet keys.
#[inline]
pub const fn is_sealed_type(t: u8) -> bool {
    match MessageType::from_byte(t) {
        Some(m) => m.is_sealed(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for m in MessageType::ALL {
            assert!(seen.insert(m.code()), "{m:?} reuses a code");
            assert_eq!(MessageType::from_byte(m.code()), Some(m));
        }
        for b in 0..=255u8 {
            if !seen.contains(&b) {
                assert_eq!(MessageType::from_byte(b), None);
                assert!(!is_sealed_type(b));
            }
        }
    }
}
