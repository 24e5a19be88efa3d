//! The shard format: constants, header parsing and writing.

/// seqid (u32) + type (u16).
pub const HEADER_LEN: usize = 6;
/// The size field at the start of a data shard's coded region.
pub const SIZE_LEN: usize = 2;
/// Bytes a data shard adds to its datagram.
pub const OVERHEAD: usize = HEADER_LEN + SIZE_LEN;
/// Largest datagram the 16-bit size field can describe.
pub const MAX_DATAGRAM: usize = u16::MAX as usize;
/// GF(2^8) Reed-Solomon: at most 256 shards per group.
pub const MAX_TOTAL_SHARDS: usize = 256;

/// Byte 4 of a data shard.
pub const KIND_DATA: u8 = 0xF1;
/// Byte 4 of a parity shard.
pub const KIND_PARITY: u8 = 0xF2;

/// Number of group ids before wrap-around: seqids run over
/// `0 .. group_count(n) * n`, the largest multiple of `n` that fits in u32.
pub const fn group_count(total_shards: usize) -> u32 {
    ((1u64 << 32) / total_shards as u64) as u32
}

pub(crate) fn write_header(buf: &mut [u8], seqid: u32, kind: u8, count: u8) {
    buf[0..4].copy_from_slice(&seqid.to_le_bytes());
    buf[4] = kind;
    buf[5] = count;
}

pub(crate) struct Header {
    pub seqid: u32,
    pub kind: u8,
    pub count: u8,
}

pub(crate) fn read_header(shard: &[u8]) -> Option<Header> {
    if shard.len() < HEADER_LEN {
        return None;
    }
    Some(Header {
        seqid: u32::from_le_bytes([shard[0], shard[1], shard[2], shard[3]]),
        kind: shard[4],
        count: shard[5],
    })
}
