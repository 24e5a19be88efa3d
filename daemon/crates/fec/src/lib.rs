//! kcpvpn forward error correction, sans-IO.
//!
//! Systematic Reed-Solomon over GF(2^8) across groups of datagrams: every
//! group has `data_shards` (ds) data shards, each carrying one datagram as
//! is, and `parity_shards` (ps) parity shards computed over them. Any ds of
//! the ds + ps shards of a group give back all its datagrams.
//!
//! * [`FecEncoder`] sends each datagram at once as a data shard and the parity
//!   shards when the group is full, or — rapid FEC — when
//!   [`FecEncoder::flush_partial`] closes a group early (the missing data
//!   shards then count as empty, so a group of one datagram becomes that
//!   datagram plus ps copies' worth of parity).
//! * [`FecDecoder`] delivers every datagram exactly once: data shards at
//!   once, lost ones as soon as enough shards of their group arrived.
//!
//! The wire format (docs/protocol.md, section 4):
//!
//! ```text
//! shard       = seqid u32 LE ‖ type u16 LE ‖ coded region
//! type        = kind (byte 4) ‖ count (byte 5)
//!               data:   kind 0xF1, count 0
//!               parity: kind 0xF2, count = data shards the group really had (1..=ds)
//! data region = size u16 LE ‖ datagram (size bytes)
//! parity      = RS parity of the group's data regions, zero-padded to the longest
//! seqid       = group × (ds+ps) + index   (data 0..ds, parity ds..ds+ps)
//! ```
//!
//! Group numbers run from 0 to ⌊2³² / (ds+ps)⌋ − 1 and then wrap to 0, so
//! seqids wrap at the largest multiple of ds+ps that fits in 32 bits.
//!
//! FEC off (ds or ps = 0) is not a mode of this crate: the tunnel then sends
//! KCP datagrams without any FEC header. [`FecEncoder::try_new`] and
//! [`FecDecoder::try_new`] refuse such counts with
//! [`FecError::InvalidShardCounts`]; [`FecEncoder::new`] and
//! [`FecDecoder::new`] panic on them (use those only with validated counts).

pub mod adapt;
mod decoder;
mod encoder;
mod wire;

pub use adapt::{parity_for_loss, parity_mix_for_loss, GROUP_FAILURE};
pub use decoder::{DecoderStats, FecDecoder};
pub use encoder::{
    EncoderStats, FecEncoder, PARTIAL_GROUP_FAILURE, SMALL_GROUP_FAILURE, SMALL_SHARE,
};
pub use wire::{
    group_count, HEADER_LEN, KIND_DATA, KIND_PARITY, MAX_DATAGRAM, MAX_TOTAL_SHARDS, OVERHEAD,
    SIZE_LEN,
};

/// Default shard counts (the original kcpvpn's `--ds 10 --ps 3`).
pub const DEFAULT_DATA_SHARDS: usize = 10;
pub const DEFAULT_PARITY_SHARDS: usize = 3;
/// Default number of groups a decoder tracks (its reordering horizon).
pub const DEFAULT_MAX_OPEN_GROUPS: usize = 64;
/// Largest `max_open_groups` a decoder accepts.
pub const MAX_OPEN_GROUPS_LIMIT: usize = 4096;

/// What went wrong. Construction errors name the bad parameter; the others
/// are malformed shards, which the caller counts and drops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    #[error(
        "FEC needs 1..=255 data shards and at least 1 parity shard, at most {MAX_TOTAL_SHARDS} \
         in all (got {data}+{parity}); to turn FEC off, leave it out instead of passing 0"
    )]
    InvalidShardCounts { data: usize, parity: usize },
    #[error("max_open_groups must be 1..={MAX_OPEN_GROUPS_LIMIT} (got {0})")]
    InvalidMaxOpenGroups(usize),
    #[error(
        "max_datagram must be at most {MAX_DATAGRAM} bytes, the size field is 16 bits (got {0})"
    )]
    InvalidMaxDatagram(usize),
    #[error("FEC shard of {0} bytes is shorter than its header")]
    Truncated(usize),
    #[error("FEC shard has an unknown type {kind:#04x}/{count} (is FEC configured the same on both sides?)")]
    BadType { kind: u8, count: u8 },
    #[error("FEC data shard says {size} bytes but carries {carried}")]
    SizeMismatch { size: usize, carried: usize },
    #[error("FEC shard seqid {0} is beyond the wrap point for these shard counts")]
    SeqidOutOfRange(u32),
    #[error("FEC shard type does not match its position in the group (index {index})")]
    WrongPosition { index: usize },
    #[error("FEC parity shard claims {count} data shards, outside 1..={data_shards}")]
    BadDataCount { count: u8, data_shards: usize },
    #[error("FEC shard contradicts the rest of its group: {0}")]
    Inconsistent(&'static str),
}

/// Checks shard counts for both ends.
pub(crate) fn check_counts(data: usize, parity: usize) -> Result<(), FecError> {
    if data == 0 || parity == 0 || data > 255 || data + parity > MAX_TOTAL_SHARDS {
        return Err(FecError::InvalidShardCounts { data, parity });
    }
    Ok(())
}
