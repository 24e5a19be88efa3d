//! The 24-byte KCP segment header, little-endian, as the reference C KCP
//! (ikcp.c) lays it out.

/// Header length of every segment.
pub const OVERHEAD: usize = 24;

/// Data (a fragment of a message).
pub const CMD_PUSH: u8 = 81;
/// Acknowledges one PUSH segment (`sn`, echoing its `ts`).
pub const CMD_ACK: u8 = 82;
/// Window probe: "tell me your window".
pub const CMD_WASK: u8 = 83;
/// Window tell: the answer to a probe (the window is in every header anyway).
pub const CMD_WINS: u8 = 84;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub conv: u32,
    pub cmd: u8,
    pub frg: u8,
    pub wnd: u16,
    pub ts: u32,
    pub sn: u32,
    pub una: u32,
    pub len: u32,
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Decodes the header at the start of `b`; None when `b` is shorter than 24 bytes.
    #[inline]
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < OVERHEAD {
            return None;
        }
        Some(Header {
            conv: u32_at(b, 0),
            cmd: b[4],
            frg: b[5],
            wnd: u16::from_le_bytes([b[6], b[7]]),
            ts: u32_at(b, 8),
            sn: u32_at(b, 12),
            una: u32_at(b, 16),
            len: u32_at(b, 20),
        })
    }

    /// Appends the 24 header bytes to `out`.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; OVERHEAD];
        h[0..4].copy_from_slice(&self.conv.to_le_bytes());
        h[4] = self.cmd;
        h[5] = self.frg;
        h[6..8].copy_from_slice(&self.wnd.to_le_bytes());
        h[8..12].copy_from_slice(&self.ts.to_le_bytes());
        h[12..16].copy_from_slice(&self.sn.to_le_bytes());
        h[16..20].copy_from_slice(&self.una.to_le_bytes());
        h[20..24].copy_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&h);
    }
}

/// Whether the datagram `d` (segments as [`Kcp::flush`](crate::Kcp::flush)
/// emits them) carries the data segment `sn`. Stops at the first header
/// that does not fit, so any bytes are safe to pass.
pub fn carries_segment(d: &[u8], sn: u32) -> bool {
    carries_any_segment(d, &[sn])
}

/// Whether the datagram `d` carries any of the data segments `sns`; as
/// [`carries_segment`], safe for any bytes.
pub fn carries_any_segment(d: &[u8], sns: &[u32]) -> bool {
    let mut at = 0usize;
    while let Some(h) = d.get(at..).and_then(Header::decode) {
        if h.cmd == CMD_PUSH && sns.contains(&h.sn) {
            return true;
        }
        at = match at.checked_add(OVERHEAD + h.len as usize) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_little_endian_and_24_bytes() {
        let h = Header {
            conv: 0x0403_0201,
            cmd: CMD_PUSH,
            frg: 7,
            wnd: 0x0a09,
            ts: 0x0e0d_0c0b,
            sn: 0x1211_100f,
            una: 0x1615_1413,
            len: 0x1a19_1817,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(
            v,
            [
                1, 2, 3, 4, 81, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                25, 26
            ]
        );
        assert_eq!(Header::decode(&v), Some(h));
        assert_eq!(Header::decode(&v[..23]), None);
    }

    #[test]
    fn finds_a_data_segment_among_several() {
        let mut d = Vec::new();
        let ack = Header {
            cmd: CMD_ACK,
            sn: 9,
            ..Header::default()
        };
        ack.encode(&mut d);
        let push = |sn, len: u32, d: &mut Vec<u8>| {
            Header {
                cmd: CMD_PUSH,
                sn,
                len,
                ..Header::default()
            }
            .encode(d);
            d.extend(std::iter::repeat_n(0xAA, len as usize));
        };
        push(7, 100, &mut d);
        push(8, 3, &mut d);
        assert!(carries_segment(&d, 7));
        assert!(carries_segment(&d, 8));
        // An ACK for sn 9 is not the segment.
        assert!(!carries_segment(&d, 9));
        // Truncated: the second data header no longer fits.
        assert!(!carries_segment(&d[..24 + 24 + 100 + 10], 8));
        // A length field pointing past the end ends the walk.
        let mut bad = Vec::new();
        Header {
            cmd: CMD_PUSH,
            sn: 1,
            len: u32::MAX,
            ..Header::default()
        }
        .encode(&mut bad);
        assert!(carries_segment(&bad, 1));
        assert!(!carries_segment(&bad, 2));
    }
}
