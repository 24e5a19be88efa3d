//! The sending side: data shards at once, parity per group.
use crate::wire::{
    self, HEADER_LEN, KIND_DATA, KIND_PARITY, MAX_DATAGRAM, MAX_TOTAL_SHARDS, OVERHEAD,
};
use crate::{check_counts, FecError};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Encoder counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Data shards sent (one per datagram).
    pub data_shards: u64,
    /// Parity shards sent.
    pub parity_shards: u64,
    /// Groups closed early by [`FecEncoder::flush_partial`].
    pub partial_groups: u64,
    /// Datagrams dropped because they exceeded `max_datagram` (a caller bug).
    pub oversize: u64,
}

/// Turns datagrams into FEC shards. Buffers are allocated once, in `new`.
pub struct FecEncoder {
    ds: usize,
    ps: usize,
    rs: ReedSolomon,
    max_datagram: usize,
    groups: u32,
    group: u32,
    /// Data shards in the current group (always < ds between calls).
    count: usize,
    /// Longest coded region (size field + datagram) in the current group.
    coded_len: usize,
    /// Whole data shards of the current group: header ‖ size ‖ datagram,
    /// zero-padded to `coded_len` just before parity is computed.
    data: Vec<Vec<u8>>,
    /// Stand-in for the data shards a partial group did not have.
    zeros: Vec<u8>,
    /// Whole parity shards: header ‖ parity.
    parity: Vec<Vec<u8>>,
    stats: EncoderStats,
}

impl FecEncoder {
    /// An encoder for `data_shards` + `parity_shards` per group and
    /// datagrams of at most `max_datagram` bytes.
    ///
    /// # Panics
    /// On counts [`try_new`](Self::try_new) refuses (0 shards, more than 256
    /// in all, `max_datagram` > 65535). Counts from the network must go
    /// through `try_new`.
    pub fn new(data_shards: usize, parity_shards: usize, max_datagram: usize) -> FecEncoder {
        match Self::try_new(data_shards, parity_shards, max_datagram) {
            Ok(e) => e,
            Err(e) => panic!("FecEncoder::new: {e}"),
        }
    }

    /// Like [`new`](Self::new), with an error instead of a panic.
    pub fn try_new(
        data_shards: usize,
        parity_shards: usize,
        max_datagram: usize,
    ) -> Result<FecEncoder, FecError> {
        Self::starting_at_group(data_shards, parity_shards, max_datagram, 0)
    }

    /// An encoder whose first group is `first_group` (taken modulo the group
    /// count): lets tests start just before the seqid wrap-around.
    pub fn starting_at_group(
        data_shards: usize,
        parity_shards: usize,
        max_datagram: usize,
        first_group: u32,
    ) -> Result<FecEncoder, FecError> {
        check_counts(data_shards, parity_shards)?;
        if max_datagram > MAX_DATAGRAM {
            return Err(FecError::InvalidMaxDatagram(max_datagram));
        }
        let rs = ReedSolomon::new(data_shards, parity_shards).map_err(|_| {
            FecError::InvalidShardCounts {
                data: data_shards,
                parity: parity_shards,
            }
        })?;
        let groups = wire::group_count(data_shards + parity_shards);
        let shard_cap = OVERHEAD + max_datagram;
        Ok(FecEncoder {
            ds: data_shards,
            ps: parity_shards,
            rs,
            max_datagram,
            groups,
            group: first_group % groups,
            count: 0,
            coded_len: 0,
            data: (0..data_shards)
                .map(|_| Vec::with_capacity(shard_cap))
                .collect(),
            zeros: Vec::with_capacity(shard_cap),
            parity: (0..parity_shards)
                .map(|_| Vec::with_capacity(shard_cap))
                .collect(),
            stats: EncoderStats::default(),
        })
    }

    pub fn data_shards(&self) -> usize {
        self.ds
    }

    pub fn parity_shards(&self) -> usize {
        self.ps
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    pub fn stats(&self) -> EncoderStats {
        self.stats
    }

    /// True when a group has data shards but no parity yet: what rapid FEC
    /// would flush.
    pub fn has_partial(&self) -> bool {
        self.count > 0
    }

    /// Emits `datagram` as a data shard, then the group's parity shards if
    /// this completed the group. A datagram longer than `max_datagram` is
    /// dropped and counted (`stats().oversize`): the caller sized its
    /// datagrams wrongly.
    pub fn encode(&mut self, datagram: &[u8], out: &mut dyn FnMut(&[u8])) {
        if datagram.len() > self.max_datagram {
            self.stats.oversize += 1;
            return;
        }
        let i = self.count;
        let seqid = self.seqid(i);
        let buf = &mut self.data[i];
        // Within the capacity reserved in `new`: no allocation.
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        wire::write_header(buf, seqid, KIND_DATA, 0);
        buf.extend_from_slice(&(datagram.len() as u16).to_le_bytes());
        buf.extend_from_slice(datagram);
        out(buf);
        self.stats.data_shards += 1;
        self.count += 1;
        self.coded_len = self.coded_len.max(buf.len() - HEADER_LEN);
        if self.count == self.ds {
            self.emit_parity(out);
        }
    }

    /// Rapid FEC: emits parity for the partial group now (the data shards it
    /// lacks count as empty) and closes it; the next datagram starts a new
    /// group. Does nothing when there is no partial group.
    pub fn flush_partial(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.count > 0 {
            self.stats.partial_groups += 1;
            self.emit_parity(out);
        }
    }

    fn seqid(&self, index: usize) -> u32 {
        // group < groups, so this stays below groups * (ds + ps) <= 2^32.
        self.group * (self.ds + self.ps) as u32 + index as u32
    }

    fn emit_parity(&mut self, out: &mut dyn FnMut(&[u8])) {
        let k = self.count;
        let len = self.coded_len;
        for d in &mut self.data[..k] {
            d.resize(HEADER_LEN + len, 0);
        }
        self.zeros.clear();
        self.zeros.resize(len, 0);
        for p in &mut self.parity {
            p.resize(HEADER_LEN + len, 0);
        }
        {
            // Slices of the coded regions, on the stack (no allocation).
            let mut inputs: [&[u8]; MAX_TOTAL_SHARDS] = [&[]; MAX_TOTAL_SHARDS];
            for (i, slot) in inputs.iter_mut().enumerate().take(self.ds) {
                *slot = if i < k {
                    &self.data[i][HEADER_LEN..]
                } else {
                    &self.zeros[..]
                };
            }
            let mut outputs: [&mut [u8]; MAX_TOTAL_SHARDS] =
                std::array::from_fn(|_| <&mut [u8]>::default());
            for (slot, p) in outputs.iter_mut().zip(self.parity.iter_mut()) {
                *slot = &mut p[HEADER_LEN..];
            }
            // Cannot fail: counts were checked in `new` and all regions
            // have length `len`.
            let r = self
                .rs
                .encode_sep(&inputs[..self.ds], &mut outputs[..self.ps]);
            debug_assert!(r.is_ok(), "parity encoding failed: {r:?}");
        }
        for j in 0..self.ps {
            let seqid = self.seqid(self.ds + j);
            let p = &mut self.parity[j];
            wire::write_header(p, seqid, KIND_PARITY, k as u8);
            out(p);
        }
        self.stats.parity_shards += self.ps as u64;
        self.group = (self.group + 1) % self.groups;
        self.count = 0;
        self.coded_len = 0;
    }
}
