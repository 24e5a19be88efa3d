//! The impairment state machine for one direction of a link, sans-IO.
//!
//! Frames go in with the time they arrived (`input`), come out when their
//! delivery time has come (`pop_due`/`poll`). Time is `u64` nanoseconds from
//! an arbitrary origin — not the protocol crates' `u32` milliseconds, because
//! serialising one 1400-byte frame at 100 Mbit/s takes 112 µs and a rate
//! limiter counted in milliseconds could not be exact.
//!
//! Order of decisions for each frame (each drawn from the seeded RNG only when
//! that impairment is enabled, so a run is repeatable):
//! random loss → Gilbert-Elliott burst loss → frame limit → rate queue (tail
//! drop when the queue is full, else serialisation at `rate`) → delay ± jitter
//! → reordering (hold the frame back so later ones overtake it) → duplication.
//! Jitter alone never reorders: a frame is never delivered before the frame
//! that entered before it (except frames chosen for reordering).
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub const NS_PER_MS: u64 = 1_000_000;
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Index of a frame held by a [`Link`] (see [`Link::pop_due`]).
pub type SlotId = u32;

/// Impairments of one direction. All probabilities are fractions in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// Fixed one-way delay.
    pub delay_ns: u64,
    /// Uniform jitter: each frame's delay is `delay ± jitter` (never below 0).
    pub jitter_ns: u64,
    /// Independent random loss per frame.
    pub loss: f64,
    /// Gilbert-Elliott: chance per frame to go from the good to the bad state
    /// (0 disables burst loss).
    pub burst_enter: f64,
    /// Chance per frame to leave the bad state (mean burst length = 1/burst_exit frames).
    pub burst_exit: f64,
    /// Loss probability while in the bad state.
    pub burst_loss: f64,
    /// Bottleneck rate in bits per second of Ethernet frame (header included); 0 = unlimited.
    pub rate_bps: u64,
    /// Bottleneck queue: frames arriving while this many bytes wait are dropped.
    pub queue_bytes: u64,
    /// Chance that a frame is held back by `reorder_ns` so later frames overtake it.
    pub reorder: f64,
    pub reorder_ns: u64,
    /// Chance that a frame is delivered twice.
    pub duplicate: f64,
    /// Most frames held at once (memory bound); more are dropped.
    pub limit: usize,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay_ns: 0,
            jitter_ns: 0,
            loss: 0.0,
            burst_enter: 0.0,
            burst_exit: 0.0,
            burst_loss: 1.0,
            rate_bps: 0,
            queue_bytes: 256 * 1024,
            reorder: 0.0,
            reorder_ns: NS_PER_MS,
            duplicate: 0.0,
            limit: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error(
        "{name}={value} is out of range: probabilities are fractions in [0, 1] (0.1 means 10%)"
    )]
    Probability { name: &'static str, value: f64 },
    #[error("{name}={value} is invalid: it must be a finite number >= 0")]
    Negative { name: &'static str, value: f64 },
    #[error("burst_enter is set but burst_exit is 0, so a burst would never end: set burst_exit > 0 (mean burst length = 1/burst_exit frames)")]
    EndlessBurst,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("unknown impairment {0:?}; known: {known}", known = LinkParams::FIELDS.join(", "))]
    Unknown(String),
}

impl LinkParams {
    /// Names accepted by [`LinkParams::set_field`] (the Python dict keys).
    pub const FIELDS: &'static [&'static str] = &[
        "delay_ms",
        "jitter_ms",
        "loss",
        "burst_enter",
        "burst_exit",
        "burst_loss",
        "rate_mbit",
        "queue_bytes",
        "reorder",
        "reorder_ms",
        "duplicate",
        "limit",
    ];

    /// Set one impairment by its user-facing name and unit (milliseconds,
    /// Mbit/s, fractions), so every front end spells them the same way.
    /// Checks this value's range only; call [`LinkParams::validate`] once all
    /// are set (some constraints involve two fields).
    pub fn set_field(&mut self, name: &str, value: f64) -> Result<(), ParamError> {
        let Some(&name) = LinkParams::FIELDS.iter().find(|f| **f == name) else {
            return Err(ParamError::Unknown(name.to_string()));
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(ParamError::Negative { name, value });
        }
        let ms = (value * NS_PER_MS as f64).round() as u64;
        let prob = || {
            if value <= 1.0 {
                Ok(value)
            } else {
                Err(ParamError::Probability { name, value })
            }
        };
        match name {
            "delay_ms" => self.delay_ns = ms,
            "jitter_ms" => self.jitter_ns = ms,
            "reorder_ms" => self.reorder_ns = ms,
            "rate_mbit" => self.rate_bps = (value * 1e6).round() as u64,
            "queue_bytes" => self.queue_bytes = value as u64,
            "limit" => self.limit = value as usize,
            "loss" => self.loss = prob()?,
            "burst_enter" => self.burst_enter = prob()?,
            "burst_exit" => self.burst_exit = prob()?,
            "burst_loss" => self.burst_loss = prob()?,
            "reorder" => self.reorder = prob()?,
            "duplicate" => self.duplicate = prob()?,
            _ => unreachable!("every name in FIELDS has an arm"),
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ParamError> {
        for (name, value) in [
            ("loss", self.loss),
            ("burst_enter", self.burst_enter),
            ("burst_exit", self.burst_exit),
            ("burst_loss", self.burst_loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ParamError::Probability { name, value });
            }
        }
        if self.burst_enter > 0.0 && self.burst_exit <= 0.0 {
            return Err(ParamError::EndlessBurst);
        }
        if self.limit == 0 {
            return Err(ParamError::Zero("limit"));
        }
        if self.rate_bps > 0 && self.queue_bytes == 0 {
            return Err(ParamError::Zero("queue_bytes"));
        }
        Ok(())
    }
}

/// Counters of one direction; `rx = tx - duplicated + dropped_* + queued` holds at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames handed out (passed), duplicates included.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub dropped_loss: u64,
    pub dropped_burst: u64,
    pub dropped_queue: u64,
    pub dropped_limit: u64,
    /// Frames whose delivery time was later than their arrival (delay, queueing or jitter).
    pub delayed: u64,
    /// Frames held back for reordering.
    pub reordered: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held right now.
    pub queued: u64,
    /// How long accepted frames waited in the rate queue before their
    /// serialisation began: counts per bucket of [`QUEUE_WAIT_BOUNDS_MS`]
    /// (bucket i: below bound i and at least bound i-1; the last: the rest).
    /// What a scheduler upstream of the bottleneck left standing there.
    pub queue_wait: [u64; QUEUE_WAIT_BUCKETS],
}

/// Upper bounds (ms, exclusive) of the queue-wait buckets; a last bucket
/// holds the waits above the highest bound.
pub const QUEUE_WAIT_BOUNDS_MS: [u64; 10] = [1, 2, 5, 10, 15, 20, 30, 50, 100, 200];
pub const QUEUE_WAIT_BUCKETS: usize = QUEUE_WAIT_BOUNDS_MS.len() + 1;

fn queue_wait_bucket(wait_ns: u64) -> usize {
    QUEUE_WAIT_BOUNDS_MS
        .iter()
        .position(|&b| wait_ns < b * NS_PER_MS)
        .unwrap_or(QUEUE_WAIT_BOUNDS_MS.len())
}

/// What happened to one input frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Queued,
    Lost,
    BurstLost,
    QueueFull,
    LimitReached,
}

pub struct Link {
    params: LinkParams,
    rng: Rng,
    bad: bool,
    /// When the bottleneck finishes sending what it already accepted.
    busy_until: u64,
    /// Delivery time of the last frame not chosen for reordering (order floor).
    last_delivery: u64,
    seq: u64,
    /// (delivery time, arrival sequence, slot): ties leave in arrival order.
    heap: BinaryHeap<Reverse<(u64, u64, SlotId)>>,
    /// Frame buffers, reused: no allocation per frame once warmed up.
    slots: Vec<Vec<u8>>,
    free: Vec<SlotId>,
    stats: LinkStats,
}

impl Link {
    pub fn new(params: LinkParams, seed: u64) -> Result<Link, ParamError> {
        params.validate()?;
        Ok(Link {
            params,
            rng: Rng::new(seed),
            bad: false,
            busy_until: 0,
            last_delivery: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            stats: LinkStats::default(),
        })
    }

    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Change impairments live; frames already held keep their delivery times.
    pub fn set_params(&mut self, params: LinkParams) -> Result<(), ParamError> {
        params.validate()?;
        self.params = params;
        Ok(())
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            queued: self.heap.len() as u64,
            ..self.stats
        }
    }

    fn store(&mut self, frame: &[u8]) -> SlotId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(Vec::with_capacity(frame.len().max(1536)));
                (self.slots.len() - 1) as SlotId
            }
        };
        let buf = &mut self.slots[id as usize];
        buf.clear();
        buf.extend_from_slice(frame);
        id
    }

    fn push(&mut self, at: u64, frame: &[u8]) {
        let id = self.store(frame);
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, id)));
    }

    /// A frame arrived at `now`.
    pub fn input(&mut self, now: u64, frame: &[u8]) -> Verdict {
        let p = &self.params;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;

        if self.rng.chance(p.loss) {
            self.stats.dropped_loss += 1;
            return Verdict::Lost;
        }
        if p.burst_enter > 0.0 {
            let flip = if self.bad {
                p.burst_exit
            } else {
                p.burst_enter
            };
            if self.rng.chance(flip) {
                self.bad = !self.bad;
            }
            if self.bad && self.rng.chance(p.burst_loss) {
                self.stats.dropped_burst += 1;
                return Verdict::BurstLost;
            }
        }
        let duplicate = self.rng.chance(p.duplicate);
        let copies = 1 + duplicate as usize;
        if self.heap.len() + copies > p.limit {
            self.stats.dropped_limit += 1;
            return Verdict::LimitReached;
        }

        let mut at = now;
        if p.rate_bps > 0 {
            let start = self.busy_until.max(now);
            let backlog_bytes =
                (start - now) as u128 * p.rate_bps as u128 / (8 * NS_PER_SEC as u128);
            if backlog_bytes >= p.queue_bytes as u128 {
                self.stats.dropped_queue += 1;
                return Verdict::QueueFull;
            }
            self.stats.queue_wait[queue_wait_bucket(start - now)] += 1;
            let serialise =
                (frame.len() as u128 * 8 * NS_PER_SEC as u128 / p.rate_bps as u128) as u64;
            self.busy_until = start + serialise;
            at = self.busy_until;
        }
        at += p.delay_ns;
        if p.jitter_ns > 0 {
            let j = (self.rng.next_f64() * 2.0 - 1.0) * p.jitter_ns as f64;
            at = (at as f64 + j).max(now as f64) as u64;
        }
        if self.rng.chance(p.reorder) {
            at += p.reorder_ns;
            self.stats.reordered += 1;
        } else {
            at = at.max(self.last_delivery);
            self.last_delivery = at;
        }
        if at > now {
            self.stats.delayed += 1;
        }
        self.push(at, frame);
        if duplicate {
            self.push(at, frame);
            self.stats.duplicated += 1;
        }
        Verdict::Queued
    }

    /// When the next frame is due, if any is held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Take up to `ids.len()` frames due at `now`, in delivery order; read
    /// them with [`Link::frame`] and give each back with [`Link::release`].
    pub fn pop_due(&mut self, now: u64, ids: &mut [SlotId]) -> usize {
        let mut n = 0;
        while n < ids.len() {
            match self.heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => break,
            }
            let Reverse((_, _, id)) = self.heap.pop().expect("peeked");
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += self.slots[id as usize].len() as u64;
            ids[n] = id;
            n += 1;
        }
        n
    }

    pub fn frame(&self, id: SlotId) -> &[u8] {
        &self.slots[id as usize]
    }

    pub fn release(&mut self, id: SlotId) {
        self.free.push(id);
    }

    /// Hand every frame due at `now` to `out`, in delivery order.
    pub fn poll(&mut self, now: u64, out: &mut impl FnMut(&[u8])) {
        let mut ids = [0 as SlotId; 32];
        loop {
            let n = self.pop_due(now, &mut ids);
            for &id in &ids[..n] {
                out(self.frame(id));
                self.release(id);
            }
            if n < ids.len() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(&i.to_be_bytes());
        f
    }

    fn id(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[..4].try_into().unwrap())
    }

    /// Feeds `n` frames spaced `gap` apart, polling at every input and at every
    /// deadline after; returns (frame number, delivery time) in delivery order.
    fn run(link: &mut Link, n: u32, gap: u64, len: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut t = 0;
        for i in 0..n {
            t = i as u64 * gap;
            while let Some(d) = link.next_deadline().filter(|d| *d <= t) {
                link.poll(d, &mut |f| out.push((id(f), d)));
            }
            link.input(t, &frame(i, len));
            link.poll(t, &mut |f| out.push((id(f), t)));
        }
        while let Some(d) = link.next_deadline() {
            assert!(d >= t);
            link.poll(d, &mut |f| out.push((id(f), d)));
        }
        out
    }

    fn check_accounting(l: &Link) {
        let s = l.stats();
        assert_eq!(
            s.rx_frames,
            s.tx_frames - s.duplicated
                + s.dropped_loss
                + s.dropped_burst
                + s.dropped_queue
                + s.dropped_limit
                + s.queued,
            "{s:?}"
        );
    }

    #[test]
    fn transparent_link_passes_every_frame_at_once_in_order() {
        let mut l = Link::new(LinkParams::default(), 1).unwrap();
        let out = run(&mut l, 1000, 10_000, 100);
        assert_eq!(out.len(), 1000);
        for (i, (n, t)) in out.iter().enumerate() {
            assert_eq!(*n, i as u32);
            assert_eq!(*t, i as u64 * 10_000);
        }
        let s = l.stats();
        assert_eq!(
            (s.tx_frames, s.tx_bytes, s.delayed, s.queued),
            (1000, 100_000, 0, 0)
        );
        check_accounting(&l);
    }

    #[test]
    fn frames_are_copied_intact() {
        let mut l = Link::new(
            LinkParams {
                delay_ns: MS,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let a: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
        let b = vec![0xAB; 60];
        l.input(0, &a);
        l.input(1, &b);
        let mut got = Vec::new();
        l.poll(MS - 1, &mut |f| got.push(f.to_vec()));
        assert!(got.is_empty(), "nothing is due before the delay");
        l.poll(MS + 1, &mut |f| got.push(f.to_vec()));
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn fixed_delay_is_exact() {
        let mut l = Link::new(
            LinkParams {
                delay_ns: 20 * MS,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let out = run(&mut l, 100, 3 * MS, 64);
        assert_eq!(out.len(), 100);
        for (i, (n, t)) in out.iter().enumerate() {
            assert_eq!(*n, i as u32);
            assert_eq!(*t, i as u64 * 3 * MS + 20 * MS);
        }
        assert_eq!(l.stats().delayed, 100);
    }

    #[test]
    fn rate_limit_spaces_frames_by_their_serialisation_time() {
        // 1250-byte frames at 10 Mbit/s: one per millisecond exactly.
        let p = LinkParams {
            rate_bps: 10_000_000,
            queue_bytes: u64::MAX,
            ..Default::default()
        };
        let mut l = Link::new(p, 1).unwrap();
        let out = run(&mut l, 500, 0, 1250);
        assert_eq!(out.len(), 500);
        for (i, (n, t)) in out.iter().enumerate() {
            assert_eq!(*n, i as u32);
            assert_eq!(*t, (i as u64 + 1) * MS);
        }
    }

    #[test]
    fn rate_limit_with_delay_sustains_exactly_the_rate() {
        // 100 Mbit/s, 20 ms: frames offered faster than the rate leave at exactly 100 Mbit/s.
        let p = LinkParams {
            rate_bps: 100_000_000,
            delay_ns: 20 * MS,
            queue_bytes: 10_000_000,
            ..Default::default()
        };
        let mut l = Link::new(p, 1).unwrap();
        let out = run(&mut l, 5000, 50_000, 1414);
        assert_eq!(out.len(), 5000);
        let span = out.last().unwrap().1 - out.first().unwrap().1;
        let bits = 4999.0 * 1414.0 * 8.0;
        let rate = bits / (span as f64 / 1e9);
        assert!((rate - 100e6).abs() < 1.0, "rate {rate}");
        assert_eq!(out[0].1, 113_120 + 20 * MS);
    }

    #[test]
    fn full_queue_drops_the_tail() {
        // 1000-byte frames at 8 Mbit/s (1 ms each), all at t=0, queue of 10 000 bytes:
        // frames are accepted while less than 10 000 bytes wait, i.e. the first 10.
        let p = LinkParams {
            rate_bps: 8_000_000,
            queue_bytes: 10_000,
            ..Default::default()
        };
        let mut l = Link::new(p, 1).unwrap();
        let verdicts: Vec<Verdict> = (0..50).map(|i| l.input(0, &frame(i, 1000))).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Queued));
        assert!(verdicts[10..].iter().all(|v| *v == Verdict::QueueFull));
        assert_eq!(l.stats().dropped_queue, 40);
        // Once the queue drains, frames are accepted again.
        assert_eq!(l.input(10 * MS, &frame(99, 1000)), Verdict::Queued);
        // Waits before serialisation: 0..=9 ms for the first ten, 0 for the last.
        assert_eq!(l.stats().queue_wait, [2, 1, 3, 5, 0, 0, 0, 0, 0, 0, 0]);
        check_accounting(&l);
    }

    #[test]
    fn random_loss_matches_its_probability_and_repeats_with_the_seed() {
        let p = LinkParams {
            loss: 0.1,
            ..Default::default()
        };
        let pattern = |seed| {
            let mut l = Link::new(p.clone(), seed).unwrap();
            let v: Vec<bool> = (0..100_000)
                .map(|i| l.input(i, &frame(i as u32, 60)) == Verdict::Lost)
                .collect();
            check_accounting(&l);
            v
        };
        let a = pattern(42);
        let lost = a.iter().filter(|x| **x).count() as f64 / a.len() as f64;
        // sigma = sqrt(0.1*0.9/1e5) ≈ 0.00095; allow 5 sigma.
        assert!((lost - 0.1).abs() < 0.005, "loss {lost}");
        assert_eq!(a, pattern(42), "same seed, same losses");
        assert_ne!(a, pattern(43), "another seed, other losses");
    }

    #[test]
    fn gilbert_elliott_losses_come_in_bursts() {
        // p = 0.01, r = 0.25: stationary bad share p/(p+r) ≈ 3.85%, mean burst 4 frames.
        let p = LinkParams {
            burst_enter: 0.01,
            burst_exit: 0.25,
            ..Default::default()
        };
        let mut l = Link::new(p, 9).unwrap();
        let lost: Vec<bool> = (0..200_000)
            .map(|i| l.input(i, &frame(0, 60)) == Verdict::BurstLost)
            .collect();
        let rate = lost.iter().filter(|x| **x).count() as f64 / lost.len() as f64;
        assert!((rate - 0.0385).abs() < 0.006, "loss rate {rate}");
        let mut bursts = Vec::new();
        let mut run_len = 0;
        for &x in &lost {
            if x {
                run_len += 1;
            } else if run_len > 0 {
                bursts.push(run_len);
                run_len = 0;
            }
        }
        let mean = bursts.iter().sum::<u32>() as f64 / bursts.len() as f64;
        assert!((mean - 4.0).abs() < 0.5, "mean burst {mean}");
        assert_eq!(
            l.stats().dropped_burst,
            lost.iter().filter(|x| **x).count() as u64
        );
        check_accounting(&l);
    }

    #[test]
    fn duplicates_are_identical_and_adjacent() {
        let p = LinkParams {
            duplicate: 0.2,
            ..Default::default()
        };
        let mut l = Link::new(p, 3).unwrap();
        let out = run(&mut l, 10_000, 1000, 64);
        let dups = l.stats().duplicated as usize;
        assert_eq!(out.len(), 10_000 + dups);
        assert!((dups as f64 / 10_000.0 - 0.2).abs() < 0.02, "{dups}");
        let mut ids: Vec<u32> = out.iter().map(|x| x.0).collect();
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "duplication alone keeps order"
        );
        ids.dedup();
        assert_eq!(ids, (0..10_000).collect::<Vec<_>>());
        check_accounting(&l);
    }

    #[test]
    fn reordered_frames_are_overtaken_but_none_is_lost() {
        // Frames every 100 µs, 10% held back 1 ms: about 10 later frames overtake each.
        let p = LinkParams {
            reorder: 0.1,
            reorder_ns: MS,
            ..Default::default()
        };
        let mut l = Link::new(p, 5).unwrap();
        let out = run(&mut l, 10_000, 100_000, 64);
        let ids: Vec<u32> = out.iter().map(|x| x.0).collect();
        let inversions = ids.windows(2).filter(|w| w[0] > w[1]).count();
        let held = l.stats().reordered as usize;
        assert!((held as f64 / 10_000.0 - 0.1).abs() < 0.02, "{held}");
        assert!(
            inversions > held / 2,
            "inversions {inversions}, held {held}"
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn jitter_stays_within_bounds_and_keeps_order() {
        let p = LinkParams {
            delay_ns: 20 * MS,
            jitter_ns: 5 * MS,
            ..Default::default()
        };
        let mut l = Link::new(p, 11).unwrap();
        let out = run(&mut l, 5000, 2 * MS, 64);
        let ids: Vec<u32> = out.iter().map(|x| x.0).collect();
        assert_eq!(ids, (0..5000).collect::<Vec<_>>());
        let delays: Vec<u64> = out.iter().map(|(n, t)| t - *n as u64 * 2 * MS).collect();
        assert!(delays.iter().all(|d| (15 * MS..=25 * MS).contains(d)));
        let spread = delays.iter().max().unwrap() - delays.iter().min().unwrap();
        assert!(spread > 8 * MS, "jitter is applied: spread {spread}");
    }

    #[test]
    fn whole_run_is_repeatable_with_a_seed() {
        let p = LinkParams {
            delay_ns: 10 * MS,
            jitter_ns: 3 * MS,
            loss: 0.05,
            burst_enter: 0.01,
            burst_exit: 0.3,
            rate_bps: 50_000_000,
            queue_bytes: 50_000,
            reorder: 0.02,
            duplicate: 0.02,
            ..Default::default()
        };
        let go = |seed| {
            let mut l = Link::new(p.clone(), seed).unwrap();
            let out = run(&mut l, 20_000, 100_000, 1000);
            check_accounting(&l);
            (out, l.stats())
        };
        let (a, sa) = go(1234);
        let (b, sb) = go(1234);
        let (c, _) = go(4321);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_ne!(a, c);
        assert!(sa.dropped_loss > 0 && sa.dropped_burst > 0 && sa.dropped_queue > 0);
        assert!(sa.duplicated > 0 && sa.reordered > 0);
    }

    #[test]
    fn limit_bounds_the_frames_held() {
        let p = LinkParams {
            delay_ns: 1000 * MS,
            limit: 100,
            ..Default::default()
        };
        let mut l = Link::new(p, 1).unwrap();
        for i in 0..150 {
            l.input(i, &frame(i as u32, 60));
        }
        let s = l.stats();
        assert_eq!((s.queued, s.dropped_limit), (100, 50));
        check_accounting(&l);
    }

    #[test]
    fn live_changes_apply_to_new_frames_only() {
        let mut l = Link::new(
            LinkParams {
                delay_ns: 10 * MS,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        l.input(0, &frame(0, 60));
        l.set_params(LinkParams {
            delay_ns: 0,
            ..Default::default()
        })
        .unwrap();
        l.input(MS, &frame(1, 60));
        let mut got = Vec::new();
        l.poll(MS, &mut |f| got.push(id(f)));
        // Frame 1 would be due at once, but order is kept behind frame 0.
        assert!(got.is_empty());
        l.poll(10 * MS, &mut |f| got.push(id(f)));
        assert_eq!(got, vec![0, 1]);
        l.set_params(LinkParams {
            loss: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(l.input(20 * MS, &frame(2, 60)), Verdict::Lost);
    }

    #[test]
    fn parameters_are_validated_with_helpful_errors() {
        let mut p = LinkParams::default();
        let e = p.set_field("loss", 10.0).unwrap_err();
        assert!(e.to_string().contains("0.1 means 10%"), "{e}");
        assert!(matches!(
            p.set_field("delay_ms", -1.0),
            Err(ParamError::Negative { .. })
        ));
        assert!(matches!(
            p.set_field("dealy_ms", 1.0),
            Err(ParamError::Unknown(_))
        ));
        let mut p = LinkParams::default();
        p.set_field("burst_enter", 0.1).unwrap();
        assert_eq!(p.validate(), Err(ParamError::EndlessBurst));
        p.set_field("burst_exit", 0.5).unwrap();
        p.validate().unwrap();
        let mut p = LinkParams::default();
        p.set_field("delay_ms", 20.5).unwrap();
        p.set_field("rate_mbit", 100.0).unwrap();
        assert_eq!((p.delay_ns, p.rate_bps), (20_500_000, 100_000_000));
        for f in LinkParams::FIELDS {
            let mut q = LinkParams {
                burst_exit: 0.5,
                ..Default::default()
            };
            q.set_field(f, 1.0)
                .and_then(|_| q.validate())
                .unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
