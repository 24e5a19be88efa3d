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
    /// Full groups given the strict parity of interactive traffic
    /// ([`FecEncoder::protect_group`]).
    pub protected_groups: u64,
    /// Full groups of small datagrams given parity for [`SMALL_GROUP_FAILURE`]
    /// (see [`SMALL_SHARE`]).
    pub small_groups: u64,
    /// Datagrams dropped because they exceeded `max_datagram` (a caller bug).
    pub oversize: u64,
}

/// Loss assumed for groups closed early before any loss report.
const PARTIAL_PRIOR: f64 = 0.1;

/// How often a group closed early (sparse traffic) may fail: see `flush_partial`.
pub const PARTIAL_GROUP_FAILURE: f64 = crate::GROUP_FAILURE / 50.0;

/// A full group whose datagrams all fit in `max_datagram / SMALL_SHARE`
/// bytes gets at least the parity for [`SMALL_GROUP_FAILURE`]. Such groups
/// are a bulk receiver's ACKs (and the inner TCP's ACKs): parity costs
/// bytes in proportion to a group's longest datagram, so theirs is cheap,
/// while a failed one loses the ACKs of dozens of full segments, which time
/// out and are resent although the peer has them. Through 40 ms /
/// 100 Mbit/s with 5% loss each way, a TCP upload's receiver got 1.8% of
/// its segments twice for that reason; with this, 0.2%, for 10% more bytes
/// in the reverse direction (0.4% of the total).
pub const SMALL_SHARE: usize = 4;
/// See [`SMALL_SHARE`]: the looser the cheaper, and 1% left as few spurious
/// resends as 0.02% (the strict target) for two thirds of its parity.
pub const SMALL_GROUP_FAILURE: f64 = crate::GROUP_FAILURE;

/// Turns datagrams into FEC shards. Buffers are allocated once, in `new`.
/// Cloning is much cheaper than building one for large groups.
#[derive(Clone)]
pub struct FecEncoder {
    ds: usize,
    ps: usize,
    rs: ReedSolomon,
    /// Parity shards a full group gets now (0..=ps; `set_parity`).
    active: usize,
    /// Share of full groups that get one more than `active` (adaptive FEC's
    /// mix, `parity_mix_for_loss`), spread evenly by `dither`.
    extra_share: f64,
    dither: f64,
    /// Loss rate the parity is chosen for (`set_loss`); None: full parity.
    loss: Option<f64>,
    /// Parity a full group of small datagrams gets at least ([`SMALL_SHARE`]),
    /// for `loss` (0 without an estimate: every group gets all parity then).
    small_parity: usize,
    /// Encoders for fewer than ps parity shards, built on first use: parity
    /// row j is the same whatever the total, so RS(ds, n) computes exactly
    /// the first n parity shards of RS(ds, ps) without the cost of the rest.
    rs_fewer: Vec<Option<ReedSolomon>>,
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
    /// The current group carries interactive traffic (`protect_group`).
    protect: bool,
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
    /// Heap bytes held for shard buffers (for memory figures).
    pub fn heap_bytes(&self) -> usize {
        self.data
            .iter()
            .chain(&self.parity)
            .map(|b| b.capacity())
            .sum()
    }

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
            active: parity_shards,
            extra_share: 0.0,
            dither: 0.0,
            loss: None,
            small_parity: 0,
            rs_fewer: (0..parity_shards).map(|_| None).collect(),
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
            protect: false,
            stats: EncoderStats::default(),
        })
    }

    pub fn data_shards(&self) -> usize {
        self.ds
    }

    pub fn parity_shards(&self) -> usize {
        self.ps
    }

    /// Parity shards each full group gets from now on (clamped to
    /// `0..=parity_shards()`): adaptive FEC lowers it on a clean link. The
    /// seqids of a group still reserve all ps parity indices, so the
    /// receiver needs no change; it just gets fewer parity shards.
    pub fn set_parity(&mut self, n: usize) {
        self.active = n.min(self.ps);
        self.extra_share = 0.0;
    }

    /// Chooses parity for a loss rate (adaptive FEC): full groups get
    /// [`parity_for_loss`](crate::parity_for_loss)`(ds, ps, loss, 1%)` shards, a
    /// group closed early with `k` data shards the count that protects `k`
    /// shards equally well (at least one). `None`: every group gets all ps.
    pub fn set_loss(&mut self, loss: Option<f64>) {
        self.set_loss_with_target(loss, crate::GROUP_FAILURE);
    }

    /// [`set_loss`](Self::set_loss) with the share of full groups allowed
    /// to fail (more lost than parity) instead of [`GROUP_FAILURE`](crate::GROUP_FAILURE),
    /// met on average by a mix of two parity counts
    /// ([`parity_mix_for_loss`](crate::parity_mix_for_loss)).
    pub fn set_loss_with_target(&mut self, loss: Option<f64>, full_group_failure: f64) {
        self.loss = loss;
        self.small_parity = loss.map_or(0, |p| {
            crate::parity_for_loss(self.ds, self.ps, p, SMALL_GROUP_FAILURE)
        });
        (self.active, self.extra_share) = match loss {
            Some(p) => crate::parity_mix_for_loss(self.ds, self.ps, p, full_group_failure),
            None => (self.ps, 0.0),
        };
    }

    /// Reports stopped coming (idle, or lost): full groups get all parity
    /// again, since the link may have changed; groups closed early keep the
    /// last estimate, because sparse traffic is exactly what leaves the
    /// reports stale and full parity would multiply it by up to ps + 1.
    pub fn set_stale(&mut self) {
        self.active = self.ps;
        self.extra_share = 0.0;
    }

    /// Parity shards a full group gets now (some get one more: see
    /// [`parity_average`](Self::parity_average)).
    pub fn parity(&self) -> usize {
        self.active
    }

    /// Parity shards per full group on average, the mix included.
    pub fn parity_average(&self) -> f64 {
        self.active as f64 + self.extra_share
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    pub fn stats(&self) -> EncoderStats {
        self.stats
    }

    /// The group the next datagram joins (or the current partial one)
    /// carries a packet of interactive traffic: when it fills, it gets the
    /// parity a group closed early gets ([`PARTIAL_GROUP_FAILURE`]), not the
    /// looser full-group target. A ping sharing a group with a download
    /// would otherwise wait for a retransmission whenever that group failed
    /// and the ping was among its losses: about 1% of pings at 5% loss each
    /// way, each late by a round trip or more.
    pub fn protect_group(&mut self) {
        self.protect = true;
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
            // Error diffusion: over any run of groups the extra shards
            // number within one of share × groups, evenly spaced.
            self.dither += self.extra_share;
            let mut np = self.active;
            if self.dither >= 1.0 {
                self.dither -= 1.0;
                np += 1;
            }
            if self.protect {
                let strict = self.strict_parity();
                if strict > np {
                    np = strict;
                    self.stats.protected_groups += 1;
                }
            }
            if self.small_parity > np && self.coded_len <= self.max_datagram / SMALL_SHARE {
                np = self.small_parity;
                self.stats.small_groups += 1;
            }
            self.emit_parity(np, out);
        }
    }

    /// Rapid FEC: emits parity for the partial group now (the data shards it
    /// lacks count as empty) and closes it; the next datagram starts a new
    /// group. Does nothing when there is no partial group. The group gets
    /// as many parity shards as its `k` data shards need to fail at most
    /// 0.02% of the time at the loss rate set (10% before any): for one or
    /// two datagrams usually fewer than a full group gets, and none on a
    /// clean link.
    pub fn flush_partial(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.count > 0 {
            self.stats.partial_groups += 1;
            // Fifty times stricter than for full groups: such groups carry
            // interactive traffic, whose every loss shows as a latency
            // spike (a retransmission, ~110 ms, which also holds the next
            // packet), and one more parity shard costs little. With 0.1%,
            // a ping at 10% loss each way failed 1 time in 250. Before any
            // report, assume a bad link (PARTIAL_PRIOR).
            // On a link measured clean that is none at all: rapid FEC then
            // costs nothing, and the receiver simply never completes the
            // group (its data shards were delivered on arrival).
            let n = self.strict_parity();
            self.emit_parity(n, out);
        }
    }

    /// Parity for the current group's data shards under the strict target
    /// of interactive traffic, at the loss rate set (a bad link before any).
    fn strict_parity(&self) -> usize {
        let p = self.loss.unwrap_or(PARTIAL_PRIOR);
        crate::parity_for_loss(self.count, self.ps, p, PARTIAL_GROUP_FAILURE)
    }

    fn seqid(&self, index: usize) -> u32 {
        // group < groups, so this stays below groups * (ds + ps) <= 2^32.
        self.group * (self.ds + self.ps) as u32 + index as u32
    }

    /// Emits `np` (1..=ps, or 0 for none) parity shards and closes the group.
    fn emit_parity(&mut self, np: usize, out: &mut dyn FnMut(&[u8])) {
        let np = np.min(self.ps);
        if np == 0 {
            self.next_group();
            return;
        }
        let k = self.count;
        let len = self.coded_len;
        for d in &mut self.data[..k] {
            d.resize(HEADER_LEN + len, 0);
        }
        self.zeros.clear();
        self.zeros.resize(len, 0);
        for p in &mut self.parity[..np] {
            p.resize(HEADER_LEN + len, 0);
        }
        if np < self.ps && self.rs_fewer[np].is_none() {
            // Once per parity count in the session's life, not per group.
            self.rs_fewer[np] = ReedSolomon::new(self.ds, np).ok();
        }
        let rs = if np == self.ps {
            &self.rs
        } else {
            match &self.rs_fewer[np] {
                Some(rs) => rs,
                // Cannot happen (ds + np <= ds + ps was accepted); send all.
                None => return self.emit_parity(self.ps, out),
            }
        };
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
            for (slot, p) in outputs.iter_mut().zip(self.parity[..np].iter_mut()) {
                *slot = &mut p[HEADER_LEN..];
            }
            // Cannot fail: counts were checked in `new` and all regions
            // have length `len`.
            let r = rs.encode_sep(&inputs[..self.ds], &mut outputs[..np]);
            debug_assert!(r.is_ok(), "parity encoding failed: {r:?}");
        }
        for j in 0..np {
            let seqid = self.seqid(self.ds + j);
            let p = &mut self.parity[j];
            wire::write_header(p, seqid, KIND_PARITY, k as u8);
            out(p);
        }
        self.stats.parity_shards += np as u64;
        self.next_group();
    }

    fn next_group(&mut self) {
        self.group = (self.group + 1) % self.groups;
        self.count = 0;
        self.coded_len = 0;
        self.protect = false;
    }
}
