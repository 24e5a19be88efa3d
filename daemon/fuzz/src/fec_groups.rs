//! FEC at the daemon's real sizes: an encoder and a decoder of up to 256
//! shards per group (any split into data and parity), the decoder tracking
//! 64 groups as the session's does, with a channel between them that the
//! input controls (drop, duplicate, swap, deliver) and encoder actions
//! (datagrams of any size, rapid-FEC flushes, adaptive parity, a start just
//! before the seqid wrap). Optionally the input also forges shards or
//! damages real ones.
//!
//! Invariants: no panic; memory within 64 groups of shards; the counters
//! add up. Without forged or damaged shards also: every datagram delivered
//! is one that was sent, unchanged, at most once; every data shard that
//! arrives in its window is delivered; and a group from which at least as
//! many shards arrived as it had data shards is delivered whole.
use crate::{id_of, pattern};
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_fec::{FecDecoder, FecEncoder, DEFAULT_MAX_OPEN_GROUPS, KIND_PARITY, OVERHEAD};
use std::cell::RefCell;
use std::collections::HashMap;

const WINDOW: usize = DEFAULT_MAX_OPEN_GROUPS;

#[derive(Arbitrary, Debug)]
struct Setup {
    ds: u8,
    ps: u8,
    wide: u8,
    max_datagram: u16,
    /// Start this many groups before the seqid wrap (None: at group 0).
    near_wrap: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Encode {
        len: u16,
    },
    /// A run of datagrams (fills groups quickly at 256 shards).
    Burst {
        count: u8,
        len: u8,
    },
    FlushPartial,
    SetParity(u8),
    SetLoss(u8),
    Stale,
    Deliver,
    DeliverAll,
    Drop,
    Dup,
    /// Swap the shard at this index with the next one.
    Swap(u16),
    /// Hostile: a shard of these bytes, or a real one with a byte changed.
    Forge(Vec<u8>),
    Damage {
        at: u16,
        xor: u8,
    },
}

/// What the test knows of each group it saw leave the encoder: its data
/// datagrams (ids) by index, and its real data count once parity tells.
#[derive(Default)]
struct Group {
    ids: HashMap<usize, u32>,
    k: Option<usize>,
    /// Distinct shards that arrived in the window, and whether any arrived
    /// too late (the decoder may have evicted the group).
    arrived: Vec<bool>,
    late: bool,
}

type Codec = (FecEncoder, FecDecoder);

thread_local! {
    /// Codecs for the large groups, built once: see `fec_counts`.
    static WIDE: RefCell<HashMap<(usize, usize, u32), Codec>> =
        RefCell::new(HashMap::new());
}

/// A fresh encoder and decoder (the large ones cloned from a cache).
fn codec(ds: usize, ps: usize, max_dgram: usize, first: u32) -> (FecEncoder, FecDecoder) {
    let build = || {
        // Prototypes in the cache are clean, so clones behave as new ones.
        (
            FecEncoder::starting_at_group(ds, ps, max_dgram, first).unwrap(),
            FecDecoder::try_new(ds, ps, WINDOW).unwrap(),
        )
    };
    if ds + ps <= 48 {
        return build();
    }
    WIDE.with(|w| {
        w.borrow_mut()
            .entry((ds, ps, first))
            .or_insert_with(build)
            .clone()
    })
}

struct Sim {
    n: usize,
    groups: u32,
    first: u32,
    max_dgram: usize,
    enc: FecEncoder,
    dec: FecDecoder,
    /// Shards in flight.
    chan: Vec<Vec<u8>>,
    /// The groups, by a count from the first that does not wrap.
    known: Vec<Group>,
    /// Length of each datagram sent (by id), and whether it was delivered.
    lens: Vec<usize>,
    delivered: Vec<bool>,
    hostile: bool,
    newest: Option<usize>,
    longest: usize,
}

impl Sim {
    fn seq(&self, seqid: u32) -> usize {
        let g = seqid / self.n as u32;
        ((g as u64 + self.groups as u64 - self.first as u64) % self.groups as u64) as usize
    }

    /// A datagram of `len` bytes (None: a rapid-FEC flush) into the encoder.
    fn encode(&mut self, what: Option<usize>) {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut sink = |s: &[u8]| out.push(s.to_vec());
        match what {
            Some(len) => {
                let id = self.lens.len() as u32;
                // Every datagram carries its 4-byte id.
                let len = len.clamp(4, self.max_dgram);
                self.lens.push(len);
                self.enc.encode(&pattern(id, len), &mut sink);
            }
            None => self.enc.flush_partial(&mut sink),
        }
        for s in out {
            let seqid = u32::from_le_bytes(s[..4].try_into().unwrap());
            let g = self.seq(seqid);
            let idx = (seqid % self.n as u32) as usize;
            if self.known.len() <= g {
                self.known.resize_with(g + 1, Group::default);
            }
            if s[4] == KIND_PARITY {
                self.known[g].k = Some(s[5] as usize);
            } else {
                let id = id_of(&s, OVERHEAD).expect("a datagram carries its id");
                self.known[g].ids.insert(idx, id);
            }
            self.chan.push(s);
        }
    }

    /// The shard at `at` of the channel into the decoder.
    fn deliver(&mut self, at: usize) {
        let s = self.chan.remove(at);
        self.longest = self.longest.max(s.len());
        if !self.hostile {
            let seqid = u32::from_le_bytes(s[..4].try_into().unwrap());
            let g = self.seq(seqid);
            let idx = (seqid % self.n as u32) as usize;
            let newest = *self.newest.get_or_insert(g);
            // Older than the window: the decoder may have let it go.
            if g + WINDOW <= newest {
                self.known[g].late = true;
            }
            self.newest = Some(newest.max(g));
            let n = self.n;
            let gr = &mut self.known[g];
            if gr.arrived.is_empty() {
                gr.arrived = vec![false; n];
            }
            gr.arrived[idx] = true;
        }
        let mut got = Vec::new();
        let r = self.dec.input(&s, &mut |d: &[u8]| got.push(d.to_vec()));
        assert!(self.hostile || r.is_ok(), "a genuine shard refused: {r:?}");
        for d in got {
            assert!(
                d.len() + OVERHEAD <= self.longest,
                "datagram longer than any shard"
            );
            if self.hostile {
                continue;
            }
            let id = id_of(&d, 0).expect("a datagram without its id") as usize;
            assert!(id < self.lens.len(), "datagram {id} never sent");
            assert_eq!(
                d,
                pattern(id as u32, self.lens[id]),
                "datagram {id} altered"
            );
            if self.delivered.len() < self.lens.len() {
                self.delivered.resize(self.lens.len(), false);
            }
            assert!(!self.delivered[id], "datagram {id} delivered twice");
            self.delivered[id] = true;
        }
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let wide = setup.wide >= 0xf0;
    let (ds, ps) = if wide {
        crate::WIDE_FEC[setup.wide as usize % crate::WIDE_FEC.len()]
    } else {
        crate::fec_counts(setup.ds, setup.ps)
    };
    run_sized(ds, ps, wide, &setup, &mut u);
}

/// `run` with data shards up to 255 (tests/corpus.rs, natively).
pub fn run_with_counts(ds: usize, ps: usize, data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(setup) = Setup::arbitrary(&mut u) {
        run_sized(ds, ps, true, &setup, &mut u);
    }
}

fn run_sized(ds: usize, ps: usize, wide: bool, setup: &Setup, u: &mut Unstructured) {
    let n = ds + ps;
    // Large groups: the daemon's datagram size, and few starts, so that
    // their codecs come from the cache.
    let max_dgram = if wide {
        1400
    } else {
        4 + setup.max_datagram as usize % 1500
    };
    let groups = kcpvpn_fec::group_count(n);
    let first = match setup.near_wrap {
        None => 0,
        Some(_) if wide => groups - 2,
        Some(g) => groups - 1 - (g as u32 % 8),
    };
    let (enc, dec) = codec(ds, ps, max_dgram, first);
    let mut sim = Sim {
        n,
        groups,
        first,
        max_dgram,
        enc,
        dec,
        chan: Vec::new(),
        known: Vec::new(),
        lens: Vec::new(),
        delivered: Vec::new(),
        hostile: false,
        newest: None,
        longest: 0,
    };
    let mut ops = 0;
    while !u.is_empty() && ops < 3000 {
        ops += 1;
        let Ok(op) = Op::arbitrary(u) else {
            break;
        };
        let chan = sim.chan.len();
        match op {
            Op::Encode { len } => sim.encode(Some(len as usize)),
            Op::Burst { count, len } => {
                for _ in 0..count {
                    sim.encode(Some(len as usize));
                }
            }
            Op::FlushPartial => sim.encode(None),
            Op::SetParity(p) => sim.enc.set_parity(p as usize % (ps + 1)),
            Op::SetLoss(l) => sim.enc.set_loss(Some(l as f64 / 255.0)),
            Op::Stale => sim.enc.set_stale(),
            Op::Deliver if chan > 0 => sim.deliver(0),
            Op::DeliverAll => {
                while !sim.chan.is_empty() {
                    sim.deliver(0);
                }
            }
            Op::Drop if chan > 0 => {
                sim.chan.remove(0);
            }
            Op::Dup if chan > 0 => {
                let s = sim.chan[0].clone();
                sim.chan.insert(1, s);
            }
            Op::Swap(i) if chan >= 2 => {
                let i = i as usize % (chan - 1);
                sim.chan.swap(i, i + 1);
            }
            Op::Forge(bytes) => {
                sim.hostile = true;
                sim.chan.insert(0, bytes);
                sim.deliver(0);
            }
            Op::Damage { at, xor } if chan > 0 && xor != 0 => {
                sim.hostile = true;
                let s = &mut sim.chan[0];
                if !s.is_empty() {
                    let i = at as usize % s.len();
                    s[i] ^= xor;
                }
            }
            _ => {}
        }
        // 64 groups of n shards of the longest seen, the pool, and slack
        // for allocation rounding.
        let bound = 2 * (WINDOW + 2) * n * (sim.longest + 64) + (1 << 20);
        let held = sim.dec.heap_bytes();
        assert!(held <= bound, "decoder holds {held} bytes, bound {bound}");
    }
    let st = sim.dec.stats();
    assert!(st.recovered <= st.delivered);
    if sim.hostile {
        return;
    }
    let delivered = &sim.delivered;
    assert_eq!(
        st.delivered,
        delivered.iter().filter(|&&d| d).count() as u64
    );
    let got = |id: &u32| delivered.get(*id as usize).copied().unwrap_or(false);
    for (g, gr) in sim.known.iter().enumerate() {
        if gr.late || gr.arrived.is_empty() {
            continue;
        }
        for (idx, id) in &gr.ids {
            if gr.arrived[*idx] {
                assert!(
                    got(id),
                    "group {g}: data shard {idx} arrived, datagram {id} not delivered"
                );
            }
        }
        let arrived = gr.arrived.iter().filter(|&&a| a).count();
        if let Some(k) = gr.k {
            if arrived >= k {
                for (idx, id) in &gr.ids {
                    assert!(
                        got(id),
                        "group {g} ({k} data, {arrived} shards arrived): datagram {id} (index {idx}) not recovered"
                    );
                }
            }
        }
    }
}
