//! Deterministic simulation harness shared by the integration tests: a
//! seeded RNG, a lossy/reordering/duplicating/delaying link, a simulated
//! clock that jumps from event to event (datagram arrivals and the endpoints'
//! `check` times), and an exactly-once / in-order / intact verifier.
#![allow(dead_code)]
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use kcpvpn_kcp::Kcp;

/// SplitMix64: tiny, seeded, good enough for simulation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / ((1u64 << 53) as f64)) < p
    }
}

#[derive(Clone, Debug)]
pub struct LinkCfg {
    pub loss: f64,
    pub dup: f64,
    /// One-way delay, ms, plus uniform jitter in [0, jitter) (jitter reorders).
    pub delay: u32,
    pub jitter: u32,
    /// Probability of an extra 0..3×delay hold-back (strong reordering).
    pub reorder: f64,
}

impl LinkCfg {
    pub fn clean(delay: u32) -> LinkCfg {
        LinkCfg {
            loss: 0.0,
            dup: 0.0,
            delay,
            jitter: 0,
            reorder: 0.0,
        }
    }
    pub fn lossy(loss: f64) -> LinkCfg {
        LinkCfg {
            loss,
            dup: 0.05,
            delay: 20,
            jitter: 15,
            reorder: 0.1,
        }
    }
}

pub struct Link {
    pub cfg: LinkCfg,
    rng: Rng,
    q: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    seq: u64,
    /// Drop everything while set.
    pub blackhole: bool,
    pub offered: u64,
    pub dropped: u64,
}

impl Link {
    pub fn new(cfg: LinkCfg, seed: u64) -> Link {
        Link {
            cfg,
            rng: Rng::new(seed),
            q: BinaryHeap::new(),
            seq: 0,
            blackhole: false,
            offered: 0,
            dropped: 0,
        }
    }

    pub fn push(&mut self, t: u64, d: &[u8]) {
        self.offered += 1;
        if self.blackhole || self.rng.chance(self.cfg.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.cfg.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = t + self.cfg.delay as u64 + self.rng.below(self.cfg.jitter as u64);
            if self.rng.chance(self.cfg.reorder) {
                at += self.rng.below(3 * self.cfg.delay as u64 + 1);
            }
            self.seq += 1;
            self.q.push(Reverse((at, self.seq, d.to_vec())));
        }
    }

    pub fn pop_due(&mut self, t: u64) -> Option<Vec<u8>> {
        if self.q.peek().is_some_and(|Reverse((at, _, _))| *at <= t) {
            self.q.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }

    pub fn next_at(&self) -> Option<u64> {
        self.q.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// Message `i` of a stream: its index, then bytes derived from (seed, i).
pub fn message(seed: u64, i: u32, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed.wrapping_mul(31).wrapping_add(i as u64));
    let mut m: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
    for (k, b) in i.to_le_bytes().iter().enumerate().take(len) {
        m[k] = *b;
    }
    m
}

/// Sizes 1..=max: mostly IP-packet-like, some tiny, some jumbo.
pub fn message_len(r: &mut Rng, max: usize) -> usize {
    let len = match r.below(10) {
        0..=1 => 1 + r.below(64) as usize,
        2..=7 => 40 + r.below(1461) as usize,
        _ => 1 + r.below(max as u64) as usize,
    };
    len.clamp(1, max)
}

/// What the simulation drives: our `Kcp` or the C reference.
pub trait Endpoint {
    fn send(&mut self, msg: &[u8]) -> Result<(), String>;
    fn input(&mut self, d: &[u8], now: u32);
    fn update(&mut self, now: u32, out: &mut Vec<Vec<u8>>);
    /// Flush at once (on-demand); endpoints without it just `update`.
    fn flush(&mut self, now: u32, out: &mut Vec<Vec<u8>>);
    fn check(&self, now: u32) -> u32;
    fn recv(&mut self) -> Option<Vec<u8>>;
    fn wait_snd(&self) -> usize;
}

impl Endpoint for Kcp {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        Kcp::send(self, msg).map_err(|e| e.to_string())
    }
    fn input(&mut self, d: &[u8], now: u32) {
        Kcp::input(self, d, now).expect("valid datagram refused");
    }
    fn update(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        Kcp::update(self, now, &mut |d| out.push(d.to_vec()));
    }
    fn flush(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        Kcp::flush(self, now, &mut |d| out.push(d.to_vec()));
    }
    fn check(&self, now: u32) -> u32 {
        Kcp::check(self, now)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.recv_vec()
    }
    fn wait_snd(&self) -> usize {
        Kcp::wait_snd(self)
    }
}

/// One direction's traffic and what has arrived of it.
pub struct Stream {
    pub seed: u64,
    pub lens: Vec<usize>,
    pub next_send: usize,
    pub next_recv: usize,
    /// Accept any order (each message still exactly once, intact): for a
    /// receiver with `unordered`. Messages must be at least 4 bytes long
    /// (they carry their index).
    pub any_order: bool,
    seen: Vec<bool>,
}

impl Stream {
    pub fn new(seed: u64, count: usize, max_len: usize) -> Stream {
        let mut r = Rng::new(seed ^ 0x5eed);
        Stream {
            seed,
            lens: (0..count).map(|_| message_len(&mut r, max_len)).collect(),
            next_send: 0,
            next_recv: 0,
            any_order: false,
            seen: vec![false; count],
        }
    }
    pub fn fixed(seed: u64, count: usize, len: usize) -> Stream {
        Stream {
            seed,
            lens: vec![len; count],
            next_send: 0,
            next_recv: 0,
            any_order: false,
            seen: vec![false; count],
        }
    }
    pub fn empty() -> Stream {
        Stream::fixed(0, 0, 0)
    }
    fn done(&self) -> bool {
        self.next_recv == self.lens.len()
    }
    /// Exactly once, in order (unless `any_order`), intact.
    fn check(&mut self, m: &[u8]) -> Result<(), String> {
        if self.any_order {
            let Some(idx) = m
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            else {
                return Err(format!("message of {} bytes has no index", m.len()));
            };
            if idx >= self.lens.len() || m != message(self.seed, idx as u32, self.lens[idx]) {
                return Err(format!("message with index {idx} is not one that was sent"));
            }
            if std::mem::replace(&mut self.seen[idx], true) {
                return Err(format!("message {idx} delivered twice"));
            }
            self.next_recv += 1;
            return Ok(());
        }
        let i = self.next_recv;
        if i >= self.lens.len() {
            return Err(format!(
                "extra message of {} bytes after all {} were delivered",
                m.len(),
                i
            ));
        }
        let want = message(self.seed, i as u32, self.lens[i]);
        if m != want.as_slice() {
            let got_idx = if m.len() >= 4 {
                u32::from_le_bytes(m[..4].try_into().unwrap()) as i64
            } else {
                -1
            };
            return Err(format!(
                "message {i}: got {} bytes (index field {got_idx}), want {} bytes",
                m.len(),
                want.len()
            ));
        }
        self.next_recv += 1;
        Ok(())
    }
}

pub struct Sim {
    pub ab: Link,
    pub ba: Link,
    /// Simulated time, ms since start; endpoints see `t0 + t` (wrapping).
    pub t: u64,
    pub t0: u32,
    /// Flush right after every input and send (on-demand), as the tunnel does.
    pub on_demand: bool,
    /// Stop sending when this many segments wait.
    pub wait_limit: usize,
    /// B does not call recv before this time (a receiver that stops reading).
    pub b_reads_from: u64,
    pub events: u64,
}

impl Sim {
    pub fn new(ab: LinkCfg, ba: LinkCfg, seed: u64) -> Sim {
        Sim {
            ab: Link::new(ab, seed ^ 0xab),
            ba: Link::new(ba, seed ^ 0xba),
            t: 0,
            // Start close to the u32 wrap so every run crosses it.
            t0: u32::MAX - 2_000,
            on_demand: false,
            wait_limit: 256,
            b_reads_from: 0,
            events: 0,
        }
    }

    pub fn now(&self) -> u32 {
        self.t0.wrapping_add(self.t as u32)
    }

    /// Runs until both streams are delivered and acknowledged, then
    /// `settle_ms` longer (to catch duplicates). `hook` runs once per step. Err describes the first failure.
    #[allow(clippy::too_many_arguments)]
    pub fn run<A: Endpoint, B: Endpoint>(
        &mut self,
        a: &mut A,
        b: &mut B,
        sa: &mut Stream,
        sb: &mut Stream,
        max_ms: u64,
        settle_ms: u64,
        hook: &mut dyn FnMut(&mut Sim, &mut A, &mut B),
    ) -> Result<(), String> {
        let mut out = Vec::new();
        let mut done_at: Option<u64> = None;
        loop {
            self.events += 1;
            let now = self.now();
            hook(self, a, b);
            while let Some(d) = self.ab.pop_due(self.t) {
                b.input(&d, now);
                if self.on_demand {
                    b.flush(now, &mut out);
                    self.send_out(&mut out, false);
                }
            }
            while let Some(d) = self.ba.pop_due(self.t) {
                a.input(&d, now);
                if self.on_demand {
                    a.flush(now, &mut out);
                    self.send_out(&mut out, true);
                }
            }
            if self.t >= self.b_reads_from {
                while let Some(m) = b.recv() {
                    sa.check(&m)?;
                }
            }
            while let Some(m) = a.recv() {
                sb.check(&m)?;
            }
            let (sent_a, sent_b) = (
                Self::top_up(a, sa, self.wait_limit)?,
                Self::top_up(b, sb, self.wait_limit)?,
            );
            if self.on_demand && sent_a {
                a.flush(now, &mut out);
            }
            self.send_out(&mut out, true);
            if self.on_demand && sent_b {
                b.flush(now, &mut out);
            }
            self.send_out(&mut out, false);
            a.update(now, &mut out);
            self.send_out(&mut out, true);
            b.update(now, &mut out);
            self.send_out(&mut out, false);

            if sa.done() && sb.done() && a.wait_snd() == 0 && b.wait_snd() == 0 {
                let d = *done_at.get_or_insert(self.t);
                if self.t >= d + settle_ms {
                    return Ok(());
                }
            }
            if self.t > max_ms {
                return Err(format!(
                    "not delivered within {max_ms} ms: a→b {}/{} (sent {}), b→a {}/{} (sent {}); a waits {}, b waits {}",
                    sa.next_recv,
                    sa.lens.len(),
                    sa.next_send,
                    sb.next_recv,
                    sb.lens.len(),
                    sb.next_send,
                    a.wait_snd(),
                    b.wait_snd()
                ));
            }
            // Jump to the next event: an arrival or an endpoint's check time.
            let mut next = self.t + 1_000;
            for at in [self.ab.next_at(), self.ba.next_at()].into_iter().flatten() {
                next = next.min(at);
            }
            for c in [a.check(now), b.check(now)] {
                let wait = c.wrapping_sub(now) as u64;
                assert!(wait <= 5_000, "check() returned {wait} ms ahead");
                next = next.min(self.t + wait);
            }
            self.t = next.max(self.t + 1);
        }
    }

    fn send_out(&mut self, out: &mut Vec<Vec<u8>>, a_to_b: bool) {
        let link = if a_to_b { &mut self.ab } else { &mut self.ba };
        for d in out.drain(..) {
            link.push(self.t, &d);
        }
    }

    fn top_up<E: Endpoint>(e: &mut E, s: &mut Stream, limit: usize) -> Result<bool, String> {
        let mut sent = false;
        while s.next_send < s.lens.len() && e.wait_snd() < limit {
            let i = s.next_send;
            e.send(&message(s.seed, i as u32, s.lens[i]))?;
            s.next_send += 1;
            sent = true;
        }
        Ok(sent)
    }
}
