//! The receiving side: delivers each datagram once, rebuilding lost ones.
use crate::wire::{self, HEADER_LEN, KIND_DATA, KIND_PARITY, MAX_TOTAL_SHARDS, OVERHEAD, SIZE_LEN};
use crate::{check_counts, FecError, MAX_OPEN_GROUPS_LIMIT};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Decoder counters. `data_received` and `parity_received` count every
/// well-formed shard of that type, including the duplicates and stale ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub data_received: u64,
    pub parity_received: u64,
    /// Datagrams delivered (received or recovered).
    pub delivered: u64,
    /// Datagrams rebuilt from parity.
    pub recovered: u64,
    /// Shards received before (same seqid).
    pub duplicates: u64,
    /// Shards for groups already complete (including parity that was not
    /// needed because no data shard was lost), evicted or behind the window.
    pub stale: u64,
    /// Shards refused as malformed (`input` returned an error).
    pub malformed: u64,
    /// Groups pushed out of the window before all their data arrived or
    /// could be rebuilt (more losses than parity). A partial group whose
    /// parity was all lost counts too, even if all its data arrived: only
    /// parity tells the decoder that the group had fewer than ds shards.
    pub evicted_incomplete: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// No shard of this group seen yet.
    Empty,
    Open,
    /// Every data shard delivered; later shards are duplicates or stale.
    Done,
}

#[derive(Clone)]
struct Slot {
    state: State,
    /// Bit `i` set: shard `i` of the group arrived.
    received: [u64; 4],
    data_count: usize,
    parity_count: usize,
    /// Data shards the group really had, from its parity (0: no parity yet).
    k: usize,
    /// Coded-region length, from the parity (0: no parity yet).
    coded_len: usize,
    /// Highest data index and longest data region seen, to check parity
    /// that arrives later against them.
    max_data_index: usize,
    max_data_len: usize,
    /// Coded regions of the shards that arrived; buffers come from the
    /// decoder's pool and go back to it when the group leaves `Open`.
    bufs: Vec<Option<Vec<u8>>>,
}

impl Slot {
    fn new(n: usize) -> Slot {
        Slot {
            state: State::Empty,
            received: [0; 4],
            data_count: 0,
            parity_count: 0,
            k: 0,
            coded_len: 0,
            max_data_index: 0,
            max_data_len: 0,
            bufs: (0..n).map(|_| None).collect(),
        }
    }

    fn has(&self, i: usize) -> bool {
        self.received[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark(&mut self, i: usize) {
        self.received[i / 64] |= 1 << (i % 64);
    }

    /// Back to `Empty`, returning buffers to the pool.
    fn reset(&mut self, pool: &mut Vec<Vec<u8>>) {
        self.release(pool);
        self.state = State::Empty;
        self.received = [0; 4];
        self.data_count = 0;
        self.parity_count = 0;
        self.k = 0;
        self.coded_len = 0;
        self.max_data_index = 0;
        self.max_data_len = 0;
    }

    fn release(&mut self, pool: &mut Vec<Vec<u8>>) {
        for b in &mut self.bufs {
            if let Some(v) = b.take() {
                pool.push(v);
            }
        }
    }
}

/// Turns FEC shards back into datagrams.
///
/// Tracks a window of the `max_open_groups` most recent groups; a shard for
/// a newer group slides the window forward, abandoning the oldest ones
/// (counted in `evicted_incomplete` if they still missed data). Memory is
/// bounded by `max_open_groups × (ds + ps)` shard buffers, each as long as
/// the longest shard received; buffers are reused, so once warmed up the
/// decoder does not allocate per shard.
///
/// Cloning is much cheaper than building one for large groups (the
/// Reed-Solomon matrix: ~90 ms at 255 + 1 shards).
#[derive(Clone)]
pub struct FecDecoder {
    ds: usize,
    n: usize,
    groups: u32,
    rs: ReedSolomon,
    slots: Vec<Slot>,
    /// Ring index of the oldest slot, and its group id.
    head: usize,
    base: u32,
    started: bool,
    pool: Vec<Vec<u8>>,
    stats: DecoderStats,
}

enum Place {
    Slot(usize),
    Behind,
}

impl FecDecoder {
    /// A decoder for groups of `data_shards` + `parity_shards`, remembering
    /// `max_open_groups` groups.
    ///
    /// # Panics
    /// On parameters [`try_new`](Self::try_new) refuses. Counts from the
    /// network must go through `try_new`.
    /// Heap bytes held for shard buffers (for memory figures).
    pub fn heap_bytes(&self) -> usize {
        let bufs: usize = self
            .slots
            .iter()
            .flat_map(|s| s.bufs.iter().flatten())
            .map(|b| b.capacity())
            .sum();
        bufs + self.pool.iter().map(|b| b.capacity()).sum::<usize>()
            + self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Frees the spare shard buffers (they come back as groups arrive):
    /// for a session gone idle.
    pub fn trim(&mut self) {
        self.pool.clear();
        self.pool.shrink_to_fit();
    }

    pub fn new(data_shards: usize, parity_shards: usize, max_open_groups: usize) -> FecDecoder {
        match Self::try_new(data_shards, parity_shards, max_open_groups) {
            Ok(d) => d,
            Err(e) => panic!("FecDecoder::new: {e}"),
        }
    }

    /// Like [`new`](Self::new), with an error instead of a panic.
    pub fn try_new(
        data_shards: usize,
        parity_shards: usize,
        max_open_groups: usize,
    ) -> Result<FecDecoder, FecError> {
        check_counts(data_shards, parity_shards)?;
        if max_open_groups == 0 || max_open_groups > MAX_OPEN_GROUPS_LIMIT {
            return Err(FecError::InvalidMaxOpenGroups(max_open_groups));
        }
        let rs = ReedSolomon::new(data_shards, parity_shards).map_err(|_| {
            FecError::InvalidShardCounts {
                data: data_shards,
                parity: parity_shards,
            }
        })?;
        let n = data_shards + parity_shards;
        Ok(FecDecoder {
            ds: data_shards,
            n,
            groups: wire::group_count(n),
            rs,
            slots: (0..max_open_groups).map(|_| Slot::new(n)).collect(),
            head: 0,
            base: 0,
            started: false,
            pool: Vec::new(),
            stats: DecoderStats::default(),
        })
    }

    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Takes one shard. Calls `out` once for each datagram it makes
    /// deliverable: this shard's own datagram, or the ones it let the
    /// decoder rebuild. Duplicates and stale shards are counted and
    /// ignored (`Ok`); malformed ones are counted and returned as `Err`.
    pub fn input(&mut self, shard: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), FecError> {
        let r = self.input_inner(shard, out);
        if r.is_err() {
            self.stats.malformed += 1;
        }
        r
    }

    fn input_inner(&mut self, shard: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), FecError> {
        let h = wire::read_header(shard).ok_or(FecError::Truncated(shard.len()))?;
        let group = h.seqid / self.n as u32;
        let index = (h.seqid % self.n as u32) as usize;
        if group >= self.groups {
            return Err(FecError::SeqidOutOfRange(h.seqid));
        }
        let region = &shard[HEADER_LEN..];
        match (h.kind, h.count) {
            (KIND_DATA, 0) => {
                if region.len() < SIZE_LEN {
                    return Err(FecError::Truncated(shard.len()));
                }
                let size = u16::from_le_bytes([region[0], region[1]]) as usize;
                if size != region.len() - SIZE_LEN {
                    return Err(FecError::SizeMismatch {
                        size,
                        carried: region.len() - SIZE_LEN,
                    });
                }
                if index >= self.ds {
                    return Err(FecError::WrongPosition { index });
                }
                self.stats.data_received += 1;
            }
            (KIND_PARITY, count) => {
                if region.len() < SIZE_LEN {
                    return Err(FecError::Truncated(shard.len()));
                }
                if count == 0 || count as usize > self.ds {
                    return Err(FecError::BadDataCount {
                        count,
                        data_shards: self.ds,
                    });
                }
                if index < self.ds {
                    return Err(FecError::WrongPosition { index });
                }
                self.stats.parity_received += 1;
            }
            (kind, count) => return Err(FecError::BadType { kind, count }),
        }
        let at = match self.place(group) {
            Place::Slot(at) => at,
            Place::Behind => {
                self.stats.stale += 1;
                return Ok(());
            }
        };
        let slot = &mut self.slots[at];
        if slot.has(index) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if slot.state == State::Done {
            // Remembered, so that another copy counts as a duplicate.
            slot.mark(index);
            self.stats.stale += 1;
            return Ok(());
        }
        if h.kind == KIND_DATA {
            if slot.k != 0 && index >= slot.k {
                return Err(FecError::Inconsistent(
                    "data shard beyond the count its parity gave",
                ));
            }
            if slot.coded_len != 0 && region.len() > slot.coded_len {
                return Err(FecError::Inconsistent(
                    "data shard longer than its group's parity",
                ));
            }
            out(&region[SIZE_LEN..]);
            self.stats.delivered += 1;
            slot.data_count += 1;
            slot.max_data_index = slot.max_data_index.max(index);
            slot.max_data_len = slot.max_data_len.max(region.len());
        } else {
            let k = h.count as usize;
            if slot.k != 0 && slot.k != k {
                return Err(FecError::Inconsistent(
                    "parity shards disagree on the data shard count",
                ));
            }
            if slot.coded_len != 0 && slot.coded_len != region.len() {
                return Err(FecError::Inconsistent(
                    "parity shards of one group differ in length",
                ));
            }
            if slot.data_count > 0 && (slot.max_data_index >= k || slot.max_data_len > region.len())
            {
                return Err(FecError::Inconsistent(
                    "parity does not cover the data shards already received",
                ));
            }
            slot.k = k;
            slot.coded_len = region.len();
            slot.parity_count += 1;
        }
        slot.mark(index);
        slot.state = State::Open;
        let k = if slot.k == 0 { self.ds } else { slot.k };
        if slot.data_count == k {
            slot.state = State::Done;
            slot.release(&mut self.pool);
            return Ok(());
        }
        // Keep the region for a later rebuild.
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(region);
        slot.bufs[index] = Some(buf);
        // Enough shards: the parity that arrived plus the phantom (empty)
        // data shards of a partial group make up for the missing data.
        if slot.k != 0 && slot.parity_count >= slot.k - slot.data_count {
            self.rebuild(at, out);
        }
        Ok(())
    }

    /// Where `group` lives, sliding the window forward if it is newer than
    /// every group seen.
    fn place(&mut self, group: u32) -> Place {
        let m = self.slots.len() as u32;
        if !self.started {
            // Put the first group seen at the newest end, so shards of the
            // groups before it (reordered) are still accepted.
            self.started = true;
            self.base = self.sub(group, m - 1);
            self.head = 0;
        }
        let off = self.sub(group, self.base);
        if off < m {
            return Place::Slot((self.head + off as usize) % self.slots.len());
        }
        if off >= self.groups / 2 {
            return Place::Behind;
        }
        let shift = off - (m - 1);
        for _ in 0..shift.min(m) {
            let s = &mut self.slots[self.head];
            if s.state == State::Open {
                self.stats.evicted_incomplete += 1;
            }
            s.reset(&mut self.pool);
            self.head = (self.head + 1) % self.slots.len();
        }
        self.base = self.add(self.base, shift);
        Place::Slot((self.head + (m - 1) as usize) % self.slots.len())
    }

    /// `a - b` modulo the group count.
    fn sub(&self, a: u32, b: u32) -> u32 {
        if a >= b {
            a - b
        } else {
            (a as u64 + self.groups as u64 - b as u64) as u32
        }
    }

    /// `a + b` modulo the group count (`a`, `b` < group count).
    fn add(&self, a: u32, b: u32) -> u32 {
        ((a as u64 + b as u64) % self.groups as u64) as u32
    }

    /// Rebuilds and delivers the missing data shards of the group at `at`.
    fn rebuild(&mut self, at: usize, out: &mut dyn FnMut(&[u8])) {
        let FecDecoder {
            ds,
            n,
            rs,
            slots,
            pool,
            stats,
            ..
        } = self;
        let (ds, n) = (*ds, *n);
        let slot = &mut slots[at];
        let len = slot.coded_len;
        let k = slot.k;
        let mut present = [false; MAX_TOTAL_SHARDS];
        for (i, p) in present.iter_mut().enumerate().take(n) {
            // Phantom shards of a partial group are known: all zero.
            *p = slot.has(i) || (k..ds).contains(&i);
        }
        for (i, b) in slot.bufs.iter_mut().enumerate().take(ds) {
            let v = b.get_or_insert_with(|| pool.pop().unwrap_or_default());
            if i >= k {
                v.clear();
            }
            // Zero-pads received data regions; sizes missing ones.
            v.resize(len, 0);
        }
        let ok = {
            let mut shards: [(&mut [u8], bool); MAX_TOTAL_SHARDS] =
                std::array::from_fn(|_| (<&mut [u8]>::default(), false));
            for (i, (s, b)) in shards
                .iter_mut()
                .zip(slot.bufs.iter_mut())
                .enumerate()
                .take(n)
            {
                *s = (b.as_deref_mut().unwrap_or_default(), present[i]);
            }
            rs.reconstruct_data(&mut shards[..n]).is_ok()
        };
        if ok {
            for i in 0..k {
                if slot.has(i) {
                    continue;
                }
                let Some(region) = slot.bufs[i].as_deref() else {
                    continue;
                };
                let size = u16::from_le_bytes([region[0], region[1]]) as usize;
                if SIZE_LEN + size > region.len() {
                    // Parity from a broken sender; nothing trustworthy to deliver.
                    stats.malformed += 1;
                    continue;
                }
                out(&region[SIZE_LEN..SIZE_LEN + size]);
                stats.recovered += 1;
                stats.delivered += 1;
            }
        } else {
            stats.malformed += 1;
        }
        slot.state = State::Done;
        slot.release(pool);
    }
}

// The received bitmask covers every index of a GF(2^8) group.
const _: () = assert!(MAX_TOTAL_SHARDS <= 4 * 64);
// A data shard always has its size field.
const _: () = assert!(OVERHEAD == HEADER_LEN + SIZE_LEN);
